"""Non-learned floors that every model number stands next to.

Silhouette inflation (core/geometry/silhouette.py): the shape the foreground mask alone implies,
seen by a pinhole with a 54° horizontal field of view, the silhouette's plane at depth 2.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..geometry.camera import fov_to_focal, make_intrinsics
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
