"""The solid build in real Blender (extension installed from its zip): one watertight mesh per result,
meshed by Blender's volume nodes, with the image projected from the matched camera."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from conftest import MODULE, datablock_counts, result_collection, trace
from PIL import Image
from test_solid import CENTRE, RADIUS, SIZE, K, holed_box, sphere_map, torus, traced_map


def scene_module():
    return sys.modules[f"{MODULE}.operators.scene"]


def layered(points: np.ndarray, valid: np.ndarray):
    """A LayeredPointMap of an analytic map, with a colour gradient for an image."""
    from core.layered import LayeredPointMap

    v, u = np.mgrid[0:SIZE, 0:SIZE]
    image = np.stack([u * 255 // SIZE, v * 255 // SIZE, np.full_like(u, 90)], axis=-1).astype(np.uint8)
    return LayeredPointMap(points, valid, K, image)


def build_solid(bpy, lpm, **options):
    scene = scene_module()
    opts = scene.BuildOptions(output="POINTS", solid=True, **options)
    collection = scene.build_result(bpy.context.scene, lpm, scene.result_name("solid"), opts)
    return next(o for o in collection.objects if o.get("wt_solid"))


def topology(bpy, obj) -> dict:
    """Counts of the evaluated mesh (modifiers applied) and its volume in world units."""
    import bmesh

    bm = bmesh.new()
    bm.from_object(obj, bpy.context.evaluated_depsgraph_get())
    out = {
        "vertices": len(bm.verts),
        "edges": len(bm.edges),
        "faces": len(bm.faces),
        "two_faces_per_edge": all(len(e.link_faces) == 2 for e in bm.edges),
        "volume": bm.calc_volume(signed=True),
    }
    bm.free()
    return out


def attribute(obj, name: str) -> np.ndarray:
    data = obj.data.attributes[name]
    assert data.data_type == "INT" and data.domain == "POINT"
    values = np.empty(len(obj.data.vertices), np.int32)
    data.data.foreach_get("value", values)
    return values


def test_sphere_solid_is_closed_outward_and_keeps_the_volume(bpy_ext):
    """A sphere's two layers give one closed, manifold mesh whose signed volume (positive: normals point
    out) is within 3 % of the sphere's; every vertex names a layer and a pixel of its nearest source point."""
    bpy = bpy_ext
    points, valid = sphere_map()
    obj = build_solid(bpy, layered(points, valid))
    counts = topology(bpy, obj)
    assert counts["two_faces_per_edge"]
    assert counts["vertices"] - counts["edges"] + counts["faces"] == 2  # a sphere's Euler characteristic
    sphere = 4 / 3 * np.pi * RADIUS**3
    assert abs(counts["volume"] - sphere) < 0.03 * sphere, (counts["volume"], sphere)
    layer, pixel = attribute(obj, "wt_layer"), attribute(obj, "wt_pixel")
    assert set(np.unique(layer)) == {0, 1}
    assert valid[0].reshape(-1)[pixel].all()
    co = np.empty(len(obj.data.vertices) * 3, np.float32)
    obj.data.vertices.foreach_get("co", co)
    depth = co.reshape(-1, 3)[:, 1] - (CENTRE[2] - RADIUS**2 / CENTRE[2])  # world y is depth: from the rim's plane
    clear = np.abs(depth) > 0.1 * RADIUS
    assert np.mean(layer[clear] == (depth[clear] > 0)) > 0.98  # in front of the rim: entries (layer 0)


@pytest.mark.parametrize("shape, genus", [("torus", 1), ("box with a hole", 1)])
def test_holes_stay_open(bpy_ext, shape, genus):
    """A torus seen at a slant and a box with a through-hole keep their hole: Euler characteristic 2 − 2g."""
    bpy = bpy_ext
    inside = torus(70.0) if shape == "torus" else holed_box
    obj = build_solid(bpy, layered(*traced_map(inside)))
    counts = topology(bpy, obj)
    assert counts["two_faces_per_edge"]
    assert counts["vertices"] - counts["edges"] + counts["faces"] == 2 - 2 * genus


def test_bad_input_gives_a_clear_error_and_builds_nothing(bpy_ext):
    """A one-layer result, an empty one and a detail that would need more than MAX_VOXELS voxels are refused
    with a message saying why, and leave no data block behind."""
    bpy = bpy_ext
    points, valid = sphere_map()
    before = datablock_counts(bpy)
    one_layer = valid.copy()
    one_layer[1] = False
    cases = [
        (layered(points, one_layer), {}, "two layers"),
        (layered(points, np.zeros_like(valid)), {}, "empty"),
        (layered(points, valid), {"solid_detail": 1024}, "voxels.*lower the detail to at most about [0-9]+ divisions"),
    ]
    for lpm, options, message in cases:
        with pytest.raises(ValueError, match=message):
            build_solid(bpy, lpm, **options)
        assert datablock_counts(bpy) == before


def lpm_to_world(scene_mod, collection, camera_points: np.ndarray) -> np.ndarray:
    """Points (N, 3) in the matched camera's Blender axes → world coordinates."""
    matrix = np.array(scene_mod.matched_camera_of(collection).matrix_world)
    return camera_points @ matrix[:3, :3].T + matrix[:3, 3]


def novel_pixels(scene, world: np.ndarray) -> np.ndarray:
    """(row, col) (N, 2) of world points (N, 3) in the scene camera's render, clamped into the image."""
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector

    W, H = scene.render.resolution_x, scene.render.resolution_y
    ndc = np.array([tuple(world_to_camera_view(scene, scene.camera, Vector(p)))[:2] for p in world.tolist()])
    col = np.clip((ndc[:, 0] * W).astype(int), 0, W - 1)
    row = np.clip(((1 - ndc[:, 1]) * H).astype(int), 0, H - 1)
    return np.stack([row, col], axis=1)


def render_alpha_and_colour(bpy, collection, path, match: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Cycles (CPU) through the matched camera (or, match False, the scene's camera) with only the solid
    shown: alpha (H, W) and sRGB (H, W, 3)."""
    scene = bpy.context.scene
    if match:
        scene_module().match_render(scene, collection)
    for obj in collection.objects:
        obj.hide_render = obj.type == "MESH" and not obj.get("wt_solid")
    scene.render.engine = "CYCLES"
    scene.cycles.device, scene.cycles.samples = "CPU", 16
    scene.view_settings.view_transform = "Standard"
    scene.render.film_transparent = True
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    rgba = np.asarray(Image.open(path).convert("RGBA"), dtype=np.float32) / 255.0
    return rgba[..., 3], rgba[..., :3]


def test_traced_solid_matches_the_silhouette_and_shows_the_image(bpy_ext, tmp_path):
    """The bundled sample traced by the shipped model, with Solid on: rendered alone through the matched
    camera, the solid covers layer 0's pixels (IoU ≥ 0.95) and shows the image's colours there; from a
    novel view it has no holes: it covers where every traced point of rays with two layers lands."""
    from core.assets import SAMPLE_IMAGE

    bpy = bpy_ext
    bpy.context.preferences.addons[MODULE].preferences.checkpoint = ""
    settings = bpy.context.scene.world_tracing
    settings.output, settings.steps, settings.solid = "POINTS", 10, True
    assert trace(bpy, SAMPLE_IMAGE) == {"FINISHED"}
    collection = result_collection(bpy)
    solid = next(o for o in collection.objects if o.get("wt_solid"))
    assert topology(bpy, solid)["two_faces_per_edge"]
    assert [m.name.endswith(("visible", "hidden")) for m in solid.data.materials] == [True, True]
    lpm = scene_module().layered_from_result(collection)
    alpha, colour = render_alpha_and_colour(bpy, collection, tmp_path / "solid.png")
    rendered, front = alpha > 0.5, lpm.valid[0]
    iou = (rendered & front).sum() / (rendered | front).sum()
    assert iou >= 0.95, iou
    inner = front & rendered
    inner[1:-1, 1:-1] &= front[:-2, 1:-1] & front[2:, 1:-1] & front[1:-1, :-2] & front[1:-1, 2:]
    image = lpm.image.astype(np.float32) / 255.0
    error = np.abs(colour[inner] - image[inner]).mean()
    assert error < 0.08, error

    scene = bpy.context.scene
    scene.camera = next(o for o in collection.objects if o.type == "CAMERA" and o.parent is not None)
    scene.frame_set(1)  # the novel-view camera swung 35° to the side
    alpha, _ = render_alpha_and_colour(bpy, collection, tmp_path / "novel.png", match=False)
    both = lpm.valid[0] & lpm.valid[1]
    world = np.stack([p[both] for p in (lpm.points[0], lpm.points[1])]).reshape(-1, 3) * [1, -1, -1]
    covered = alpha[tuple(novel_pixels(scene, lpm_to_world(scene_module(), collection, world)).T)] > 0.5
    assert covered.mean() > 0.97, covered.mean()


def test_a_refused_solid_keeps_the_trace(bpy_ext):
    """Tracing with Solid on, where the solid is refused (a detail needing too many voxels): the result is
    built without a solid and the panel warns why, so the trace is not lost."""
    bpy = bpy_ext
    settings = bpy.context.scene.world_tracing
    settings.solid, settings.solid_detail, settings.mode = True, 1024, "scene"  # the whole frame: a deep, wide box
    assert trace(bpy) == {"FINISHED"}
    collection = result_collection(bpy)
    assert collection is not None and not any(o.get("wt_solid") for o in collection.objects)
    assert any(o.modifiers.get("Points") for o in collection.objects)
    level, message = sys.modules[f"{MODULE}.operators.state"].message
    assert level == "WARNING" and "no solid" in message and "voxels" in message, message
