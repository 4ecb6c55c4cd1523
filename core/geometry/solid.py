"""One watertight mesh from a layered point map: occupancy from ray intervals, then marching cubes.

Along each pixel's ray, layers 2k and 2k+1 are where the ray enters and leaves the object: the ray is
inside between them. A last layer without a partner (an odd number of valid layers) closes nothing: the
ray is outside after it. A voxel is inside when its centre projects (nearest pixel) onto a ray with an
interval that holds the centre's depth z (for a pinhole camera, z orders the points of a ray as the
distance does). Coordinates are OpenCV camera space (x right, y down, z forward).

Meshing needs scipy and scikit-image (imported when used), which the Blender extension does not bundle,
so this module stays out of its zip (paths_exclude_pattern in blender_manifest.toml).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

MAX_VOXELS = 50_000_000
DIVISIONS = 128  # default voxel size: the diagonal of the solid's bounding box / DIVISIONS
PAD = 2  # outside voxels around the bounding box, so the surface closes
SMOOTH_SIGMA = 1.0  # voxels: no stair steps; sheets thinner than about 1.5 voxels fall below the 0.5 level
MAX_FACES = 200_000


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
    points: np.ndarray, valid: np.ndarray, intrinsics: np.ndarray, voxel_size: float | None = None
) -> OccupancyGrid:
    """Voxelise the solid between each ray's entry and exit layers (see the module docstring).

    points: (L, H, W, 3) camera space; valid: (L, H, W) bool; intrinsics: (3, 3) in pixels. The grid spans
    the bounding box of the paired points plus PAD voxels; voxel_size defaults to its diagonal / DIVISIONS.
    Raises ValueError for an empty or one-layer result and for a grid of more than MAX_VOXELS voxels.
    """
    paired = paired_layers(valid)
    source = points[paired].astype(np.float64)
    lo, hi = source.min(axis=0), source.max(axis=0)
    size = float(np.linalg.norm(hi - lo)) / DIVISIONS if voxel_size is None else float(voxel_size)
    if not size > 0 or not math.isfinite(size):
        raise ValueError(f"the voxel size must be a positive number, got {size}")
    shape = np.ceil((hi - lo) / size).astype(np.int64) + 1 + 2 * PAD  # (X, Y, Z)
    if np.prod(shape) > MAX_VOXELS:
        smallest = float(np.cbrt(np.prod(hi - lo + 2 * PAD * size) / MAX_VOXELS))
        raise ValueError(
            f"voxel size {size:.4g} gives {' × '.join(map(str, shape))} = {int(np.prod(shape)):,} voxels, "
            f"more than {MAX_VOXELS:,}; use a voxel size of at least about {smallest:.3g}"
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


def _marching_cubes():
    """scikit-image's marching cubes, or an ImportError saying how to get it."""
    try:
        from skimage.measure import marching_cubes
    except ImportError as e:
        raise ImportError(
            f"solid meshes need scikit-image ({e}): pip install scikit-image (pinned in requirements.txt)"
        ) from None
    return marching_cubes


def grid_surface(grid: OccupancyGrid) -> tuple[np.ndarray, np.ndarray]:
    """The 0.5 level set of the slightly blurred occupancy: vertices (N, 3) float32 in camera space and
    faces (M, 3) int64, counter-clockwise seen from outside (right-hand normals point out)."""
    from scipy.ndimage import gaussian_filter

    marching_cubes = _marching_cubes()
    field = gaussian_filter(grid.inside.astype(np.float32), SMOOTH_SIGMA)
    if not field.max() > 0.5:
        raise ValueError(
            f"no voxel of size {grid.voxel_size:.4g} is inside the solid (it is thinner than that); "
            "try a smaller voxel size"
        )
    verts, faces, _, _ = marching_cubes(field, 0.5, spacing=(grid.voxel_size,) * 3)
    # verts are (z, y, x), where the faces wind clockwise seen from outside; reversing the axes is a mirror,
    # which turns them counter-clockwise
    vertices = (grid.origin + verts[:, ::-1]).astype(np.float32)
    return vertices, faces.astype(np.int64)


def solid_mesh(
    points: np.ndarray,
    valid: np.ndarray,
    intrinsics: np.ndarray,
    voxel_size: float | None = None,
    max_faces: int | None = MAX_FACES,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A closed, outward-facing triangle mesh of the solid of a layered point map.

    points: (L, H, W, 3) camera space; valid: (L, H, W) bool; intrinsics: (3, 3) in pixels. voxel_size as
    in `occupancy_grid`; while the mesh has more than max_faces faces, the voxels grow and it is rebuilt.
    Returns vertices (N, 3) float32 in camera space, faces (M, 3) int64 and vertex_layer (N,) int32, the
    layer of each vertex's nearest paired point.
    """
    from scipy.spatial import cKDTree

    size = voxel_size
    while True:
        grid = occupancy_grid(points, valid, intrinsics, size)
        vertices, faces = grid_surface(grid)
        if max_faces is None or len(faces) <= max_faces:
            break
        size = grid.voxel_size * max(1.1, math.sqrt(len(faces) / max_faces))
        log.info(f"{len(faces):,} faces at voxel size {grid.voxel_size:.4g} (more than {max_faces:,}): {size:.4g}")
    layer, row, col = np.nonzero(paired_layers(valid))
    _, nearest = cKDTree(points[layer, row, col]).query(vertices, workers=-1)
    return vertices, faces, layer[nearest].astype(np.int32)
