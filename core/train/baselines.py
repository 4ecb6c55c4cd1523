"""Non-learned floors that every model number stands next to.

Objects — silhouette inflation (core/geometry/silhouette.py): the shape the foreground mask alone
implies, seen by a pinhole with a 54° horizontal field of view, the silhouette's plane at depth 2.
Scenes — a constant depth, and "farther toward the top of the frame": the depth linear in the image
row that fits the truth best (least squares; the best any such ramp can do). Both lie along the
true camera's rays, so only their depth is judged.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..geometry.camera import fov_to_focal, make_intrinsics
from ..geometry.points import pixel_rays
from ..geometry.silhouette import inflate

INFLATION_FOV = math.radians(54.0)
INFLATION_DEPTH = 2.0


def silhouette_inflation(
    foreground: np.ndarray, fov: float = INFLATION_FOV
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two layers from a mask: points (2, H, W, 3) float32 (zero outside), valid (2, H, W), intrinsics (3, 3).

    foreground: (H, W) bool. An empty mask gives no valid point.
    """
    H, W = foreground.shape
    f = fov_to_focal(fov, W)
    points = inflate(torch.from_numpy(foreground)[None], f, INFLATION_DEPTH)[0].numpy()
    return points.astype(np.float32), np.stack([foreground, foreground]), make_intrinsics(f, f, W / 2, H / 2)


def scene_floors(
    points: np.ndarray, valid: np.ndarray, intrinsics: np.ndarray
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The scene floors for one ground truth: {"constant": ..., "ramp": ...}, each one layer as
    (points (1, H, W, 3) float32, valid (1, H, W)), on the visible pixels of layer 0.

    points (L, H, W, 3), valid (L, H, W): the truth; intrinsics (3, 3) its camera.
    """
    H, W = valid.shape[1:]
    mask = valid[0]
    rays = pixel_rays(torch.from_numpy(intrinsics.astype(np.float32)), H, W).numpy()  # [H, W, 3]
    rows = np.broadcast_to(np.arange(H, dtype=np.float64)[:, None], (H, W))
    z = points[0, ..., 2].astype(np.float64)
    if mask.sum() >= 2:
        A = np.stack([rows[mask], np.ones(int(mask.sum()))], 1)
        (slope, offset), *_ = np.linalg.lstsq(A, z[mask], rcond=None)
        level = float(np.median(z[mask]))
    else:
        slope, offset, level = 0.0, 1.0, 1.0
    ramp = np.maximum(slope * rows + offset, 1e-3 * max(level, 1e-6))
    out = {}
    for name, depth in (("constant", np.full((H, W), level)), ("ramp", ramp)):
        out[name] = ((rays * depth[..., None] * mask[..., None]).astype(np.float32)[None], mask[None].copy())
    return out
