"""Tests for core.meshing (grid meshes of layers) and core.export (PLY / OBJ files), with Blender's importers."""

import os

import numpy as np
import pytest
from conftest import plane_points

from core.export import (
    export_meshes_obj,
    export_points_ply,
    layered_to_point_arrays,
    write_ply_mesh,
    write_ply_points,
)
from core.geometry.meshing import layer_to_grid_mesh, layered_to_meshes
from core.layered import LayeredPointMap

PLY_TYPES = {"float": "<f4", "uchar": "u1", "int": "<i4"}


def two_layer_map(H: int = 5, W: int = 7) -> LayeredPointMap:
    """Layer 0: fully valid plane at z = 1; layer 1: plane at z = 2, valid on the left 4 columns but pixel (2, 1)."""
    valid = np.ones((2, H, W), dtype=bool)
    valid[1, :, 4:] = False
    valid[1, 2, 1] = False
    points = np.stack([plane_points(np.full((H, W), 1.0)), plane_points(np.full((H, W), 2.0))])
    image = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    return LayeredPointMap(np.where(valid[..., None], points, 0.0), valid, np.eye(3, dtype=np.float32), image)


def face_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(F, 3) unit right-hand normals (b − a) × (c − a)."""
    a, b, c = (vertices[faces[:, k]].astype(np.float64) for k in range(3))
    n = np.cross(b - a, c - a)
    return n / np.linalg.norm(n, axis=-1, keepdims=True)


def read_ply(path) -> tuple[np.ndarray, np.ndarray | None]:
    """Minimal binary little-endian PLY reader: (vertex structured array, (F, 3) triangles or None)."""
    data = open(path, "rb").read()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    lines = data[:end].decode("ascii").splitlines()
    assert lines[:2] == ["ply", "format binary_little_endian 1.0"]
    counts, fields, element = {}, [], None
    for words in (line.split() for line in lines):
        if words[0] == "element":
            element = words[1]
            counts[element] = int(words[2])
        elif words[0] == "property" and element == "vertex":
            fields.append((words[2], PLY_TYPES[words[1]]))
        elif words[0] == "property":
            assert words[1:] == ["list", "uchar", "int", "vertex_indices"]
    vertices = np.frombuffer(data, dtype=fields, count=counts["vertex"], offset=end)
    if "face" not in counts:
        assert end + vertices.nbytes == len(data)
        return vertices, None
    faces = np.frombuffer(data, dtype=[("n", "u1"), ("v", "<i4", (3,))], offset=end + vertices.nbytes)
    assert len(faces) == counts["face"] and np.all(faces["n"] == 3)
    return vertices, faces["v"]


@pytest.fixture
def bpy():
    """Blender as a module, reset to an empty scene."""
    bpy = pytest.importorskip("bpy")
    bpy.ops.wm.read_factory_settings(use_empty=True)
    return bpy


def test_plane_meshes_every_quad_with_normals_toward_camera():
    """A fully valid 6×9 plane facing the camera gives 2·5·8 = 80 triangles, every normal (0, 0, −1)."""
    points = plane_points(np.full((6, 9), 3.0))
    mesh = layer_to_grid_mesh(points, np.ones((6, 9), dtype=bool))
    assert mesh.vertices.shape == (54, 3) and mesh.vertices.dtype == np.float32
    assert mesh.faces.shape == (80, 3) and mesh.faces.dtype == np.int32
    np.testing.assert_allclose(face_normals(mesh.vertices, mesh.faces), np.tile([0.0, 0.0, -1.0], (80, 1)), atol=1e-6)


def test_depth_step_cuts_triangles_unless_the_threshold_allows_it():
    """Left half at z = 1, right half at z = 2: no triangle spans the step at 5%, all 2·5·7 are kept at 200%."""
    depth = np.ones((6, 8))
    depth[:, 4:] = 2.0
    points, valid = plane_points(depth), np.ones((6, 8), dtype=bool)
    cut = layer_to_grid_mesh(points, valid, max_rel_jump=0.05)
    z = cut.vertices[cut.faces, 2]
    assert len(cut.faces) == 2 * 5 * 6
    assert np.all(z.max(axis=1) == z.min(axis=1))
    assert len(layer_to_grid_mesh(points, valid, max_rel_jump=2.0).faces) == 2 * 5 * 7
    assert len(layer_to_grid_mesh(points, valid, max_rel_jump=1.0).faces) == 2 * 5 * 7  # 2/1 − 1 = 1 ≤ 1: inclusive


def test_invalid_pixels_get_no_vertex_and_pixels_map_back():
    """Vertices are the valid pixels in row-major order; an invalid inner pixel drops 6 triangles,
    the top-right one 2."""
    H, W = 7, 6
    points = plane_points(np.random.default_rng(1).uniform(1.0, 1.01, (H, W)))
    valid = np.ones((H, W), dtype=bool)
    valid[3, 2] = False
    valid[0, 5] = False
    mesh = layer_to_grid_mesh(points, valid, layer=4)
    row, col = np.divmod(mesh.pixels, W)
    assert len(mesh.vertices) == valid.sum() == 40
    assert mesh.layer == 4
    assert mesh.pixels.dtype == np.int64 and np.all(valid[row, col])
    np.testing.assert_array_equal(mesh.vertices, points[row, col])
    assert len(mesh.faces) == 2 * 6 * 5 - 6 - 2


def test_uvs_sit_at_pixel_centres_with_bottom_left_origin():
    """The top-left pixel has (u, v) = (0.5/W, 1 − 0.5/H), the bottom-right one (1 − 0.5/W, 0.5/H)."""
    H, W = 4, 10
    mesh = layer_to_grid_mesh(plane_points(np.ones((H, W))), np.ones((H, W), dtype=bool))
    assert mesh.uvs.dtype == np.float32 and mesh.uvs.shape == (H * W, 2)
    np.testing.assert_allclose(mesh.uvs[0], [0.05, 0.875])
    np.testing.assert_allclose(mesh.uvs[-1], [0.95, 0.125])
    assert mesh.uvs.min() > 0.0 and mesh.uvs.max() < 1.0


def test_layered_to_meshes_gives_one_mesh_per_chosen_layer():
    """Layer 0 is a full 5×7 grid, layer 1 its 5×4 valid part less the 6 triangles of pixel (2, 1)."""
    lpm = two_layer_map()
    meshes = layered_to_meshes(lpm)
    assert [m.layer for m in meshes] == [0, 1]
    assert [len(m.vertices) for m in meshes] == [35, 19]
    assert [len(m.faces) for m in meshes] == [2 * 4 * 6, 2 * 4 * 3 - 6]
    assert [m.layer for m in layered_to_meshes(lpm, layers=[1])] == [1]


def test_point_arrays_gather_every_valid_point_with_its_pixel_colour():
    """54 points (35 + 19), layer by layer, each with the image colour of its pixel."""
    lpm = two_layer_map()
    points, colors, layer, pixel = layered_to_point_arrays(lpm)
    assert len(points) == 54 and np.count_nonzero(layer == 1) == 19
    row, col = np.divmod(pixel, lpm.width)
    np.testing.assert_array_equal(points, lpm.points[layer, row, col])
    np.testing.assert_array_equal(colors, lpm.image[row, col])


def test_ply_points_round_trip(tmp_path):
    """The point PLY holds x y z, red green blue, wt_layer wt_pixel as given; atomic write, umask permissions."""
    points, colors, layer, pixel = layered_to_point_arrays(two_layer_map())
    write_ply_points(tmp_path / "p.ply", points, colors, layer, pixel)
    vertices, faces = read_ply(tmp_path / "p.ply")
    assert faces is None
    assert vertices.dtype.names == ("x", "y", "z", "red", "green", "blue", "wt_layer", "wt_pixel")
    np.testing.assert_array_equal(np.stack([vertices["x"], vertices["y"], vertices["z"]], axis=-1), points)
    np.testing.assert_array_equal(np.stack([vertices["red"], vertices["green"], vertices["blue"]], axis=-1), colors)
    np.testing.assert_array_equal(vertices["wt_layer"], layer)
    np.testing.assert_array_equal(vertices["wt_pixel"], pixel)
    assert [p.name for p in tmp_path.iterdir()] == ["p.ply"]  # the temporary file is gone
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "p.ply").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's owner-only 0o600


def test_ply_mesh_round_trip(tmp_path):
    """The mesh PLY holds the vertices, UVs, layer and pixels of the mesh, and its triangles."""
    lpm = two_layer_map()
    mesh = layered_to_meshes(lpm)[1]
    write_ply_mesh(tmp_path / "m.ply", mesh, lpm.image.reshape(-1, 3)[mesh.pixels])
    vertices, faces = read_ply(tmp_path / "m.ply")
    np.testing.assert_array_equal(faces, mesh.faces)
    np.testing.assert_array_equal(np.stack([vertices["s"], vertices["t"]], axis=-1), mesh.uvs)
    np.testing.assert_array_equal(vertices["z"], mesh.vertices[:, 2])
    assert np.all(vertices["wt_layer"] == 1)
    np.testing.assert_array_equal(vertices["wt_pixel"], mesh.pixels)


def test_blender_imports_ply_points_with_wt_attributes(bpy, tmp_path):
    """Blender's PLY importer gives one mesh of 54 loose vertices; wt_layer / wt_pixel arrive as attributes."""
    lpm = two_layer_map()
    export_points_ply(lpm, tmp_path / "points.ply")
    bpy.ops.wm.ply_import(filepath=str(tmp_path / "points.ply"))
    (obj,) = bpy.data.objects
    me = obj.data
    assert (len(me.vertices), len(me.polygons)) == (54, 0)
    # Blender 5.0's PLY importer (import_attributes=True by default) turns every unknown vertex
    # property into a POINT attribute of the same name, always of type FLOAT (int32 values are
    # converted, exact up to 2^24); colours arrive as the FLOAT_COLOR attribute "Col".
    assert (me.attributes["wt_layer"].data_type, me.attributes["wt_layer"].domain) == ("FLOAT", "POINT")
    wt_layer = np.empty(54, dtype=np.float32)
    wt_pixel = np.empty(54, dtype=np.float32)
    me.attributes["wt_layer"].data.foreach_get("value", wt_layer)
    me.attributes["wt_pixel"].data.foreach_get("value", wt_pixel)
    _, _, layer, pixel = layered_to_point_arrays(lpm)
    np.testing.assert_array_equal(wt_layer, layer)
    np.testing.assert_array_equal(wt_pixel, pixel)
    assert "Col" in me.attributes


def test_blender_imports_obj_as_one_object_per_layer(bpy, tmp_path):
    """Blender's OBJ importer gives wt_layer_0 / wt_layer_1 with the meshes' vertices (in order), faces, UVs."""
    lpm = two_layer_map()
    export_meshes_obj(lpm, tmp_path / "meshes.obj")
    bpy.ops.wm.obj_import(filepath=str(tmp_path / "meshes.obj"))
    assert sorted(bpy.data.objects.keys()) == ["wt_layer_0", "wt_layer_1"]
    for mesh in layered_to_meshes(lpm):
        me = bpy.data.objects[f"wt_layer_{mesh.layer}"].data
        assert (len(me.vertices), len(me.polygons)) == (len(mesh.vertices), len(mesh.faces))
        co = np.empty(3 * len(me.vertices), dtype=np.float32)
        me.vertices.foreach_get("co", co)
        np.testing.assert_allclose(co.reshape(-1, 3), mesh.vertices, atol=1e-6)
        normals = np.empty(3 * len(me.polygons), dtype=np.float32)
        me.polygons.foreach_get("normal", normals)
        np.testing.assert_allclose(
            normals.reshape(-1, 3)[:, 2], -1.0, atol=1e-6
        )  # mesh space, before the object's rotation
        assert "UVMap" in me.uv_layers and "Color" in me.color_attributes


def test_blender_imports_ply_mesh(bpy, tmp_path):
    """Blender's PLY importer reads the mesh PLY's 35 vertices, 48 triangles and its UVs."""
    lpm = two_layer_map()
    mesh = layered_to_meshes(lpm)[0]
    write_ply_mesh(tmp_path / "layer0.ply", mesh, lpm.image.reshape(-1, 3)[mesh.pixels])
    bpy.ops.wm.ply_import(filepath=str(tmp_path / "layer0.ply"))
    (obj,) = bpy.data.objects
    assert (len(obj.data.vertices), len(obj.data.polygons)) == (35, 48)
    assert "UVMap" in obj.data.uv_layers
