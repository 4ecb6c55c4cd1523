"""The solid a layered point map encloses, as voxels: occupancy from ray intervals (numpy only).

Along each pixel's ray, layers 2k and 2k+1 are where the ray enters and leaves the object: the ray is
inside between them. A last layer without a partner (an odd number of valid layers) closes nothing: the
ray is outside after it. A voxel is inside when its centre projects (nearest pixel) onto a ray with an
interval that holds the centre's depth z (for a pinhole camera, z orders the points of a ray as the
distance does). Coordinates are OpenCV camera space (x right, y down, z forward).

The surface is made from these voxels by scikit-image in `core.geometry.solid` (`python -m core solid`)
and by Blender's own volume nodes in the extension.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MAX_VOXELS = 50_000_000
DIVISIONS = 128  # default voxel size: the diagonal of the solid's bounding box / DIVISIONS
PAD = 2  # outside voxels around the bounding box, so the surface closes


@dataclass
class OccupancyGrid:
    """Voxels of a solid.

    inside:     (Z, Y, X) bool; voxel (k, j, i) is centred at origin + (i, j, k) · voxel_size.
    origin:     (3,) float64, camera-space centre of voxel (0, 0, 0).
    voxel_size: edge length, in the units of the points.
    """

    inside: np.ndarray
    origin: np.ndarray
    voxel_size: float


def project_to_pixels(
    xyz: np.ndarray, intrinsics: np.ndarray, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """The pixel each camera-space point falls on (nearest pixel: pixel (r, c) spans [c, c+1) × [r, r+1)).

    xyz: (..., 3); intrinsics: (3, 3). Returns flat indices row·W + col (...) int64, clamped into the
    image, and seen (...) bool: in front of the camera and inside the image.
    """
    p = xyz @ np.asarray(intrinsics, dtype=np.float64).T
    with np.errstate(divide="ignore", invalid="ignore"):
        u, v = p[..., 0] / p[..., 2], p[..., 1] / p[..., 2]
    seen = (p[..., 2] > 0) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
    col = np.clip(np.nan_to_num(u), 0, width - 1).astype(np.int64)
    row = np.clip(np.nan_to_num(v), 0, height - 1).astype(np.int64)
    return row * width + col, seen


def paired_layers(valid: np.ndarray) -> np.ndarray:
    """(L, H, W) bool: the valid layers that have a partner (2k with 2k+1), the surface of the solid.

    Raises ValueError where nothing is valid or no ray has two layers.
    """
    if not valid.any():
        raise ValueError("the result is empty: no valid points")
    pairs = valid[0 : len(valid) - 1 : 2] & valid[1::2]  # (L // 2, H, W)
    if not pairs.any():
        raise ValueError(
            f"needs at least two layers: a solid lies between a ray's entry and exit, and none of the "
            f"{valid.shape[1]}×{valid.shape[2]} rays of this {len(valid)}-layer result has a second layer"
        )
    paired = np.zeros_like(valid)
    paired[: 2 * len(pairs)] = np.repeat(pairs, 2, axis=0)
    return paired


def occupancy_grid(
    points: np.ndarray,
    valid: np.ndarray,
    intrinsics: np.ndarray,
    voxel_size: float | None = None,
    divisions: int = DIVISIONS,
) -> OccupancyGrid:
    """Voxelise the solid between each ray's entry and exit layers (see the module docstring).

    points: (L, H, W, 3) camera space; valid: (L, H, W) bool; intrinsics: (3, 3) in pixels. The grid spans
    the bounding box of the paired points plus PAD voxels; voxel_size defaults to its diagonal / divisions.
    Raises ValueError for an empty or one-layer result and for a grid of more than MAX_VOXELS voxels.
    """
    paired = paired_layers(valid)
    source = points[paired].astype(np.float64)
    lo, hi = source.min(axis=0), source.max(axis=0)
    size = float(np.linalg.norm(hi - lo)) / divisions if voxel_size is None else float(voxel_size)
    if not size > 0 or not math.isfinite(size):
        raise ValueError(f"the voxel size must be a positive number, got {size}")
    shape = np.ceil((hi - lo) / size).astype(np.int64) + 1 + 2 * PAD  # (X, Y, Z)
    if np.prod(shape) > MAX_VOXELS:
        smallest = float(np.cbrt(np.prod(hi - lo + 2 * PAD * size) / MAX_VOXELS))
        advice = (
            f"use a voxel size of at least about {smallest:.3g}"
            if voxel_size is not None
            else f"lower the detail to at most about {int(divisions * size / smallest)} divisions"
        )
        raise ValueError(
            f"voxel size {size:.4g} gives {' × '.join(map(str, shape))} = {int(np.prod(shape)):,} voxels, "
            f"more than {MAX_VOXELS:,}; {advice}"
        )
    origin = lo - PAD * size
    L, H, W = valid.shape
    pair_z = np.where(paired, points[..., 2], np.nan)[: 2 * (L // 2)].reshape(L // 2, 2, H * W)
    near, far = np.nan_to_num(pair_z[:, 0], nan=np.inf), np.nan_to_num(pair_z[:, 1], nan=-np.inf)  # (P, H·W)
    x, y, z = (origin[a] + size * np.arange(shape[a]) for a in range(3))
    xy = np.stack(np.meshgrid(x, y), axis=-1)  # (Y, X, 2)
    inside = np.empty(shape[::-1], dtype=bool)
    for k, depth in enumerate(z):  # one slice of constant depth at a time: (Y, X) voxels
        xyz = np.concatenate([xy, np.full(xy.shape[:2] + (1,), depth)], axis=-1)
        pixel, seen = project_to_pixels(xyz, intrinsics, H, W)
        inside[k] = seen & ((near[:, pixel] <= depth) & (depth <= far[:, pixel])).any(axis=0)
    return OccupancyGrid(inside, origin, size)
