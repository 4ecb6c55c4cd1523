"""Non-learned floors that every model number stands next to (numpy + scipy).

Silhouette inflation: the shape the foreground mask alone implies. With `d` the Euclidean
distance transform of the mask and r = max(d), each foreground pixel gets a half-thickness
o = sqrt(1 − (1 − d/r)²) · r/f · 2 (a round profile reaching r/f·2 — the silhouette's half-width at
depth 2 — on the medial axis); layer 0 lies at depth 2 − o and layer 1 at 2 + o along the pixel's
ray, seen by a pinhole with a 54° horizontal field of view.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import distance_transform_edt

from ..geometry.camera import fov_to_focal, make_intrinsics

INFLATION_FOV = math.radians(54.0)


def silhouette_inflation(
    foreground: np.ndarray, fov: float = INFLATION_FOV
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two layers from a mask: points (2, H, W, 3) float32 (zero outside), valid (2, H, W), intrinsics (3, 3).

    foreground: (H, W) bool. An empty mask gives no valid point.
    """
    H, W = foreground.shape
    f = fov_to_focal(fov, W)
    d = distance_transform_edt(foreground)
    r = float(d.max())
    valid = np.stack([foreground, foreground])
    if r == 0:
        return np.zeros((2, H, W, 3), np.float32), valid, make_intrinsics(f, f, W / 2, H / 2)
    o = np.sqrt(np.clip(1 - (1 - d / r) ** 2, 0, 1)) * r / f * 2
    v, u = np.mgrid[0:H, 0:W] + 0.5
    rays = np.stack([(u - W / 2) / f, (v - H / 2) / f, np.ones((H, W))], -1)  # z = 1
    depth = np.stack([2 - o, 2 + o])  # (2, H, W)
    points = (depth[..., None] * rays[None]) * valid[..., None]
    return points.astype(np.float32), valid, make_intrinsics(f, f, W / 2, H / 2)
