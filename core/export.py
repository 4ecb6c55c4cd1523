"""Files Blender can import from a layered point map: PLY point clouds, PLY and OBJ meshes (numpy, no bpy).

Coordinates are written as they are, in OpenCV camera space (x right, y down, z forward). Blender's
importers keep them in the mesh data: the PLY importer's default axes (forward Y, up Z) are the
identity, the OBJ importer's (forward −Z, up Y) become the object's rotation (+90° about X).
Every vertex carries its layer and pixel (row·W + col) where the format allows: PLY properties
`wt_layer` and `wt_pixel` (int32), OBJ object names `wt_layer_<k>` (one object per layer; a mesh
of several layers, such as a solid, is one object of its own name). All writes are atomic.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .atomic import write_atomic
from .geometry.meshing import GridMesh, layered_to_meshes, pixels_to_uvs
from .layered import LayeredPointMap

_PLY_TYPES = {"f4": "float", "u1": "uchar", "i4": "int"}
_OBJ_HEADER = "# World Tracing, OpenCV camera space (x right, y down, z forward)\n"
MESH_SUFFIXES = (".ply", ".obj")


def ply_vertex_table(
    points: np.ndarray, colors: np.ndarray, layer: np.ndarray, pixel: np.ndarray, uvs: np.ndarray | None = None
) -> np.ndarray:
    """(N,) little-endian structured array: x y z [s t] red green blue wt_layer wt_pixel.

    points: (N, 3) float; colors: (N, 3) uint8; layer, pixel: (N,) int; uvs: optional (N, 2).
    """
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    fields += [("s", "<f4"), ("t", "<f4")] if uvs is not None else []
    fields += [("red", "u1"), ("green", "u1"), ("blue", "u1"), ("wt_layer", "<i4"), ("wt_pixel", "<i4")]
    table = np.empty(len(points), dtype=fields)
    table["x"], table["y"], table["z"] = np.asarray(points, dtype=np.float32).T
    if uvs is not None:
        table["s"], table["t"] = np.asarray(uvs, dtype=np.float32).T
    table["red"], table["green"], table["blue"] = np.asarray(colors, dtype=np.uint8).T
    table["wt_layer"] = layer
    table["wt_pixel"] = pixel
    return table


def write_ply(path: str | os.PathLike, vertices: np.ndarray, faces: np.ndarray | None = None) -> None:
    """Binary little-endian PLY of a vertex table (see `ply_vertex_table`) and optional (F, 3) triangles."""
    header = [
        "ply",
        "format binary_little_endian 1.0",
        "comment World Tracing, OpenCV camera space (x right, y down, z forward)",
        f"element vertex {len(vertices)}",
    ]
    header += [f"property {_PLY_TYPES[vertices.dtype[name].str[1:]]} {name}" for name in vertices.dtype.names]
    blocks: list[bytes] = [np.ascontiguousarray(vertices).tobytes()]
    if faces is not None:
        tris = np.empty(len(faces), dtype=[("n", "u1"), ("v", "<i4", (3,))])
        tris["n"], tris["v"] = 3, faces
        header += [f"element face {len(faces)}", "property list uchar int vertex_indices"]
        blocks.append(tris.tobytes())
    header.append("end_header\n")
    write_atomic(path, lambda f: f.writelines(["\n".join(header).encode("ascii"), *blocks]))


def write_ply_points(
    path: str | os.PathLike, points: np.ndarray, colors: np.ndarray, layer: np.ndarray, pixel: np.ndarray
) -> None:
    """Point cloud PLY: x y z (float), red green blue (uchar), wt_layer wt_pixel (int).

    points: (N, 3); colors: (N, 3) uint8; layer, pixel: (N,) int.
    """
    write_ply(path, ply_vertex_table(points, colors, layer, pixel))


def write_ply_mesh(path: str | os.PathLike, mesh: GridMesh, colors: np.ndarray) -> None:
    """Mesh PLY of one `GridMesh`: vertex x y z s t red green blue wt_layer wt_pixel, triangle faces.

    colors: (V, 3) uint8, one per vertex (e.g. `image.reshape(-1, 3)[mesh.pixels]`).
    """
    layer = np.full(len(mesh.vertices), mesh.layer, dtype=np.int32)
    write_ply(path, ply_vertex_table(mesh.vertices, colors, layer, mesh.pixels, mesh.uvs), mesh.faces)


def layered_to_point_arrays(lpm: LayeredPointMap) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All valid points of all layers, layer by layer in row-major pixel order.

    Returns points (N, 3) float32, colors (N, 3) uint8 (the image colour of each point's pixel),
    layer (N,) int64 and pixel (N,) int64 (row·W + col).
    """
    layer, row, col = np.nonzero(lpm.valid)
    return lpm.points[layer, row, col], lpm.image[row, col], layer, row * lpm.width + col


def export_points_ply(lpm: LayeredPointMap, path: str | os.PathLike) -> None:
    """Write every valid point of `lpm` as a coloured PLY point cloud (see `write_ply_points`)."""
    write_ply_points(path, *layered_to_point_arrays(lpm))


def _format_rows(line: str, values: np.ndarray) -> str:
    """`line` (a %-format with one field per column, ending in a newline) applied to every row of (N, C) values."""
    return (line * len(values)) % tuple(values.ravel().tolist())


def obj_object_text(
    name: str, vertices: np.ndarray, colors: np.ndarray, uvs: np.ndarray, faces: np.ndarray, offset: int = 0
) -> str:
    """OBJ object `name`: `v x y z r g b` (colours in [0, 1]), `vt u v` and `f v/vt` lines.

    vertices: (V, 3); colors: (V, 3) uint8; uvs: (V, 2); faces: (F, 3) indices into `vertices`.
    `offset` is the number of vertices written before (OBJ indices are 1-based and global to the file;
    each vertex has the vt of the same index).
    """
    v = np.concatenate([vertices, colors / 255.0], axis=1)
    f = np.repeat(faces.astype(np.int64) + offset + 1, 2, axis=1)  # (F, 6): v/vt pairs
    return (
        f"o {name}\n"
        + _format_rows("v %.7g %.7g %.7g %.4g %.4g %.4g\n", v)
        + _format_rows("vt %.7g %.7g\n", uvs)
        + _format_rows("f %d/%d %d/%d %d/%d\n", f)
    )


def mesh_to_obj_text(mesh: GridMesh, colors: np.ndarray, offset: int = 0) -> str:
    """OBJ object `wt_layer_<k>` of one `GridMesh` (see `obj_object_text`); colors: (V, 3) uint8."""
    return obj_object_text(f"wt_layer_{mesh.layer}", mesh.vertices, colors, mesh.uvs, mesh.faces, offset)


def export_meshes_obj(lpm: LayeredPointMap, path: str | os.PathLike, max_rel_jump: float = 0.05) -> None:
    """Write one OBJ object per layer of `lpm` (see `layer_to_grid_mesh` and `mesh_to_obj_text`)."""
    parts = [_OBJ_HEADER]
    offset = 0
    for mesh in layered_to_meshes(lpm, max_rel_jump):
        parts.append(mesh_to_obj_text(mesh, lpm.image.reshape(-1, 3)[mesh.pixels], offset))
        offset += len(mesh.vertices)
    write_atomic(path, lambda f: f.write("".join(parts).encode("ascii")))


def mesh_format(path: str | os.PathLike) -> str:
    """The format of `path` from its suffix: "ply" or "obj"; raises ValueError for any other."""
    suffix = Path(path).suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise ValueError(f"{path}: unknown mesh format {suffix or '(no suffix)'!r}; use {' or '.join(MESH_SUFFIXES)}")
    return suffix[1:]


def write_mesh(
    path: str | os.PathLike,
    vertices: np.ndarray,
    faces: np.ndarray,
    layer: np.ndarray,
    pixel: np.ndarray,
    image: np.ndarray,
    name: str = "wt_mesh",
) -> None:
    """One mesh as PLY (vertex x y z s t red green blue wt_layer wt_pixel) or OBJ (object `name`), by suffix.

    vertices: (V, 3); faces: (F, 3); layer: (V,) int (PLY only); pixel: (V,) row·W + col, the pixel whose
    colour in image (H, W, 3) uint8 and UV (see `pixels_to_uvs`) each vertex takes.
    """
    colors, uvs = image.reshape(-1, 3)[pixel], pixels_to_uvs(pixel, *image.shape[:2])
    if mesh_format(path) == "ply":
        write_ply(path, ply_vertex_table(vertices, colors, layer, pixel, uvs), faces)
    else:
        text = _OBJ_HEADER + obj_object_text(name, vertices, colors, uvs, faces)
        write_atomic(path, lambda f: f.write(text.encode("ascii")))
