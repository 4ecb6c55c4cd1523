"""Triangle meshes from layered point maps: one grid mesh per layer (numpy, no bpy).

Each valid pixel of a layer becomes a vertex; each 2×2 pixel quad gives up to two triangles,
dropped where a corner is invalid or the depth jumps (an occlusion edge, not a surface), and kept
as one quad where both survive.
Coordinates stay in OpenCV camera space (x right, y down, z forward).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..layered import LayeredPointMap


@dataclass
class GridMesh:
    """The valid pixels of one layer as a polygon grid: quads where both of a 2×2 pixel quad's triangles
    survive the cuts, single triangles where one does.

    vertices:  (V, 3) float32 camera-space points, one per valid pixel in row-major order.
    quads:     (Q, 4) int32 indices into `vertices` (bottom-left, bottom-right, top-right, top-left),
               counter-clockwise as seen from the camera; splitting at corners 0–2 gives the two triangles.
    triangles: (T, 3) int32 indices, counter-clockwise as seen from the camera.
    uvs:       (V, 2) float32 image coordinates, origin at the bottom-left (Blender's convention).
    pixels:    (V,) int64 row·W + col of each vertex's pixel.
    layer:     index of the layer in its layered point map.
    """

    vertices: np.ndarray
    quads: np.ndarray
    triangles: np.ndarray
    uvs: np.ndarray
    pixels: np.ndarray
    layer: int

    @property
    def faces(self) -> np.ndarray:
        """Every face as triangles (F, 3) int32: each quad split along its bottom-left–top-right diagonal
        (the grid's own triangles), then the single triangles."""
        q = self.quads
        return np.concatenate([q[:, [3, 0, 2]], q[:, [2, 0, 1]], self.triangles]) if len(q) else self.triangles


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
    """Mesh one layer: a vertex per valid pixel, up to two triangles per 2×2 pixel quad.

    Each quad (tl, tr, bl, br) has triangles (tl, bl, tr) and (tr, bl, br): counter-clockwise on the image,
    so for a surface facing the camera the right-hand normal in OpenCV camera space points toward it
    (negative z). A triangle is kept when its three pixels are valid and its nearest and farthest corner
    depths lie on one surface (see `on_one_surface`); a quad whose two triangles are kept becomes one
    quad. points: (H, W, 3); valid: (H, W) bool. Works on the pixel grid by slicing (no gathers).
    """
    H, W = valid.shape
    pixels = np.flatnonzero(valid)
    index = np.full((H, W), -1, dtype=np.int32)
    index.reshape(-1)[pixels] = np.arange(len(pixels), dtype=np.int32)
    z = np.where(valid, points[..., 2], np.nan)  # NaN fails every comparison: invalid corners cut
    corner = {  # (H-1, W-1) views of the four corners of every quad
        "tl": (slice(None, -1), slice(None, -1)),
        "tr": (slice(None, -1), slice(1, None)),
        "bl": (slice(1, None), slice(None, -1)),
        "br": (slice(1, None), slice(1, None)),
    }
    zc = {k: z[v] for k, v in corner.items()}
    shared_lo, shared_hi = np.minimum(zc["tr"], zc["bl"]), np.maximum(zc["tr"], zc["bl"])  # NaN propagates
    with np.errstate(invalid="ignore"):
        first = on_one_surface(np.minimum(shared_lo, zc["tl"]), np.maximum(shared_hi, zc["tl"]), max_rel_jump)
        second = on_one_surface(np.minimum(shared_lo, zc["br"]), np.maximum(shared_hi, zc["br"]), max_rel_jump)
    ic = {k: index[v] for k, v in corner.items()}
    both = first & second
    quads = np.stack([ic["bl"][both], ic["br"][both], ic["tr"][both], ic["tl"][both]], axis=-1)
    one, two = first & ~second, second & ~first
    triangles = np.concatenate(
        [
            np.stack([ic["tl"][one], ic["bl"][one], ic["tr"][one]], axis=-1),
            np.stack([ic["tr"][two], ic["bl"][two], ic["br"][two]], axis=-1),
        ]
    )
    return GridMesh(
        vertices=points.reshape(-1, 3)[pixels].astype(np.float32),
        quads=quads,
        triangles=triangles,
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
