"""One watertight mesh from a layered point map: the voxels of `core.geometry.occupancy`, then marching cubes.

Meshing needs scipy and scikit-image (imported when used), which the Blender extension does not bundle,
so this module stays out of its zip (paths_exclude_pattern in blender_manifest.toml); the extension
meshes the same voxels with Blender's volume nodes.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from .occupancy import OccupancyGrid, occupancy_grid, paired_layers

log = logging.getLogger(__name__)

SMOOTH_SIGMA = 1.0  # voxels: no stair steps; sheets thinner than about 1.5 voxels fall below the 0.5 level
MAX_FACES = 200_000


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
