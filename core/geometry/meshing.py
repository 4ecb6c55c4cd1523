"""Triangle meshes from layered point maps: one grid mesh per layer (numpy, no bpy).

Each valid pixel of a layer becomes a vertex; each 2×2 pixel quad gives up to two triangles,
dropped where a corner is invalid or the depth jumps (an occlusion edge, not a surface).
Coordinates stay in OpenCV camera space (x right, y down, z forward).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..layered import LayeredPointMap


@dataclass
class GridMesh:
    """The triangulated valid pixels of one layer.

    vertices: (V, 3) float32 camera-space points, one per valid pixel in row-major order.
    faces:    (F, 3) int32 indices into `vertices`, counter-clockwise as seen from the camera.
    uvs:      (V, 2) float32 image coordinates, origin at the bottom-left (Blender's convention).
    pixels:   (V,) int64 row·W + col of each vertex's pixel.
    layer:    index of the layer in its layered point map.
    """

    vertices: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray
    pixels: np.ndarray
    layer: int


@lru_cache(maxsize=4)
def grid_triangles(height: int, width: int) -> np.ndarray:
    """Both triangles of every 2×2 quad of an H×W grid, as flat pixel indices row·W + col.

    Each quad gives (top-left, bottom-left, top-right) and (top-right, bottom-left, bottom-right):
    counter-clockwise on the image, so for a surface facing the camera the right-hand normal
    (b − a) × (c − a) in OpenCV camera space points toward the camera (negative z).
    Returns (2·(H−1)·(W−1), 3) int64, quad by quad in row-major order; cached per size, read-only.
    """
    p = np.arange(height * width, dtype=np.int64).reshape(height, width)
    tl, tr, bl, br = p[:-1, :-1], p[:-1, 1:], p[1:, :-1], p[1:, 1:]
    quads = np.stack([np.stack([tl, bl, tr], axis=-1), np.stack([tr, bl, br], axis=-1)], axis=-2)
    tris = quads.reshape(-1, 3)
    tris.setflags(write=False)
    return tris


def pixels_to_uvs(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """UVs of pixel centres: u = (col + 0.5) / W, v = 1 − (row + 0.5) / H (bottom-left origin).

    pixels: (N,) flat indices row·W + col. Returns (N, 2) float32.
    """
    row, col = np.divmod(pixels, width)
    return np.stack([(col + 0.5) / width, 1.0 - (row + 0.5) / height], axis=-1).astype(np.float32)


def on_one_surface(z_near: np.ndarray, z_far: np.ndarray, max_rel_jump: float) -> np.ndarray:
    """The depth-jump test: do depths z_near ≤ z_far lie on one surface (no occlusion edge between them)?

    True where z_near > 0 (in front of the camera) and z_far / z_near − 1 ≤ max_rel_jump. Arrays of any
    one (broadcastable) shape; returns bool of that shape.
    """
    return (z_near > 0) & (z_far <= (1.0 + max_rel_jump) * z_near)


def layer_to_grid_mesh(points: np.ndarray, valid: np.ndarray, layer: int = 0, max_rel_jump: float = 0.05) -> GridMesh:
    """Mesh one layer: a vertex per valid pixel, two triangles per 2×2 quad (see `grid_triangles`).

    A triangle is kept when its three pixels are valid and its nearest and farthest corner depths lie on
    one surface (see `on_one_surface`). points: (H, W, 3); valid: (H, W) bool.
    """
    H, W = valid.shape
    pixels = np.flatnonzero(valid)
    index = np.full(H * W, -1, dtype=np.int64)
    index[pixels] = np.arange(len(pixels))
    tris = grid_triangles(H, W)
    z = points[..., 2].reshape(-1)[tris]  # (T, 3)
    keep = valid.reshape(-1)[tris].all(axis=1) & on_one_surface(z.min(axis=1), z.max(axis=1), max_rel_jump)
    return GridMesh(
        vertices=points.reshape(-1, 3)[pixels].astype(np.float32),
        faces=index[tris[keep]].astype(np.int32),
        uvs=pixels_to_uvs(pixels, H, W),
        pixels=pixels,
        layer=layer,
    )


def layered_to_meshes(
    lpm: LayeredPointMap, max_rel_jump: float = 0.05, layers: list[int] | None = None
) -> list[GridMesh]:
    """One `GridMesh` per layer of `lpm` (all layers, front to back, unless `layers` picks some)."""
    chosen = range(lpm.num_layers) if layers is None else layers
    return [layer_to_grid_mesh(lpm.points[k], lpm.valid[k], k, max_rel_jump) for k in chosen]
