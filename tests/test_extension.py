"""The extension in real Blender: built with Blender's tool, installed from its zip, driven by operators."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import DATA, MODULE, ROOT, SAMPLE, datablock_counts, result_collection, trace
from PIL import Image


def vertex_arrays(obj) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A geometry object's vertex positions (N, 3) and its wt_layer and wt_pixel (N,) int32."""
    n = len(obj.data.vertices)
    co, layer, pixel = np.empty(n * 3, np.float32), np.empty(n, np.int32), np.empty(n, np.int32)
    obj.data.vertices.foreach_get("co", co)
    obj.data.attributes["wt_layer"].data.foreach_get("value", layer)
    obj.data.attributes["wt_pixel"].data.foreach_get("value", pixel)
    return co.reshape(-1, 3), layer, pixel


def test_enable_disable_ten_times_leaves_no_leftovers(installed):
    """Disabling removes operators, settings and handlers; enabling again restores them, ten times over."""
    import bpy

    handlers = len(bpy.app.handlers.load_pre), len(bpy.app.handlers.load_post)
    for _ in range(10):
        bpy.ops.preferences.addon_disable(module=MODULE)
        assert not hasattr(bpy.types.Scene, "world_tracing")
        assert not hasattr(bpy.types, "WORLD_TRACING_OT_trace_image")
        assert (len(bpy.app.handlers.load_pre), len(bpy.app.handlers.load_post)) == (handlers[0] - 1, handlers[1] - 1)
        bpy.ops.preferences.addon_enable(module=MODULE)
        assert hasattr(bpy.types.Scene, "world_tracing") and hasattr(bpy.ops.world_tracing, "trace_image")
        assert (len(bpy.app.handlers.load_pre), len(bpy.app.handlers.load_post)) == handlers


def test_new_files_take_steps_and_samples_from_the_preferences(bpy_ext):
    """The preferences' default steps and samples seed the settings of every newly opened file."""
    bpy = bpy_ext
    prefs = bpy.context.preferences.addons[MODULE].preferences
    prefs.default_steps, prefs.default_samples = 7, 3
    bpy.ops.wm.read_homefile(use_empty=True)
    settings = bpy.context.scene.world_tracing
    assert (settings.steps, settings.samples) == (7, 3)
    prefs.default_steps, prefs.default_samples = 20, 1


def test_trace_builds_collection_camera_and_layers(bpy_ext):
    """One call builds the result: a collection with the matched camera, points and meshes per layer."""
    bpy = bpy_ext
    assert trace(bpy) == {"FINISHED"}
    collection = result_collection(bpy)
    assert collection.name == "WT object_rgba"
    scene = bpy.context.scene
    camera = scene.camera
    assert camera.name in collection.objects and camera.type == "CAMERA"
    assert (scene.render.resolution_x, scene.render.resolution_y) == (56, 40)
    geometry = [o for o in collection.objects if o.type == "MESH"]
    assert any(o.modifiers.get("Points") for o in geometry) and any(len(o.data.polygons) for o in geometry)
    for obj in geometry:
        attrs = obj.data.attributes
        assert attrs["wt_layer"].data_type == "INT" and attrs["wt_pixel"].data_type == "INT"
        assert attrs["wt_layer"].domain == "POINT" and "wt_color" in attrs
    novel = [o for o in collection.objects if o.type == "CAMERA" and o.parent is not None]
    assert len(novel) == 1


def test_bundled_sample_traces_with_the_shipped_model(bpy_ext):
    """The default model (shipped inside the zip) traces the bundled sample into a solid object:
    most foreground pixels get a visible point, and hidden layers lie behind the visible surface."""
    from core.assets import SAMPLE_IMAGE

    bpy = bpy_ext
    bpy.context.preferences.addons[MODULE].preferences.checkpoint = ""
    settings = bpy.context.scene.world_tracing
    settings.output, settings.steps = "POINTS", 10
    assert trace(bpy, SAMPLE_IMAGE) == {"FINISHED"}
    alpha = np.asarray(Image.open(SAMPLE_IMAGE))[..., 3] > 127
    W = alpha.shape[1]
    camera = bpy.context.scene.camera.matrix_world.translation
    distance = {}  # layer → {pixel: distance from the camera}
    for obj in result_collection(bpy).objects:
        if obj.type != "MESH":
            continue
        co, layer, pixel = vertex_arrays(obj)
        world = co @ np.array(obj.matrix_world)[:3, :3].T + np.array(obj.matrix_world)[:3, 3]
        norms = np.linalg.norm(world - np.array(camera), axis=1)
        distance[int(layer[0])] = dict(zip(pixel.tolist(), norms.tolist(), strict=True))
    visible = np.array([alpha[divmod(p, W)] for p in distance[0]])
    assert len(distance[0]) > 0.9 * alpha.sum() and visible.mean() > 0.95
    behind = [distance[1][p] >= distance[0][p] for p in distance[1] if p in distance[0]]
    assert len(behind) > 0.3 * alpha.sum() and np.mean(behind) > 0.95


def test_layer0_points_project_to_their_pixel_centres(bpy_ext):
    """Seen through the matched camera, every layer-0 point lands within 0.5 px of its pixel's centre."""
    from bpy_extras.object_utils import world_to_camera_view

    bpy = bpy_ext
    trace(bpy)
    scene = bpy.context.scene
    obj = next(o for o in result_collection(bpy).objects if o.modifiers.get("Points") and o.name.endswith("L0"))
    n = len(obj.data.vertices)
    co = np.empty(n * 3, np.float32)
    obj.data.vertices.foreach_get("co", co)
    pixels = np.empty(n, np.int32)
    obj.data.attributes["wt_pixel"].data.foreach_get("value", pixels)
    W, H = scene.render.resolution_x, scene.render.resolution_y
    from mathutils import Vector

    errors = []
    for p, pix in zip(co.reshape(-1, 3)[::7], pixels[::7], strict=False):
        ndc = world_to_camera_view(scene, scene.camera, obj.matrix_world @ Vector(p.tolist()))
        u, v = ndc.x * W, (1.0 - ndc.y) * H
        row, col = divmod(int(pix), W)
        errors.append(max(abs(u - (col + 0.5)), abs(v - (row + 0.5))))
    assert n > 100 and max(errors) < 0.5, max(errors)


def test_novel_view_render_shows_the_geometry(bpy_ext, tmp_path):
    """A Cycles CPU render through the novel-view camera has the traced points in the picture."""
    bpy = bpy_ext
    trace(bpy)
    scene = bpy.context.scene
    bpy.ops.world_tracing.view_camera(novel=True)
    assert scene.camera.parent is not None
    scene.render.engine = "CYCLES"
    scene.cycles.device, scene.cycles.samples = "CPU", 4
    scene.render.resolution_x, scene.render.resolution_y = 64, 48
    scene.render.film_transparent = True
    scene.render.filepath = str(tmp_path / "novel.png")
    bpy.ops.render.render(write_still=True)
    alpha = np.asarray(Image.open(tmp_path / "novel.png"))[..., 3]
    assert (alpha > 0).mean() > 0.02


def test_image_view_render_reproduces_the_image(bpy_ext, tmp_path):
    """F12 through the matched camera (Standard view transform) shows the image's own colours where
    the object is: the points sit on their pixels and carry the image's sRGB colours. With the shipped
    model, as a user traces it (a random network's anchored surface is far steeper than any real one)."""
    bpy = bpy_ext
    bpy.context.preferences.addons[MODULE].preferences.checkpoint = ""
    settings = bpy.context.scene.world_tracing
    settings.output, settings.layers = "POINTS", 1
    settings.edge_filter = 0.0  # the random model's depths are noise, which the filter would thin out into holes
    trace(bpy)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device, scene.cycles.samples = "CPU", 8
    scene.view_settings.view_transform = "Standard"
    scene.render.filepath = str(tmp_path / "view.png")
    bpy.ops.render.render(write_still=True)
    rendered = np.asarray(Image.open(tmp_path / "view.png").convert("RGB")).astype(np.float32) / 255
    source = np.asarray(Image.open(SAMPLE).convert("RGBA")).astype(np.float32) / 255
    inside = source[..., 3] > 0.99
    inside[1:-1, 1:-1] &= (
        inside[:-2, 1:-1] & inside[2:, 1:-1] & inside[1:-1, :-2] & inside[1:-1, 2:]
    )  # away from the edge
    error = np.abs(rendered[inside] - source[..., :3][inside]).mean()
    assert rendered.shape[:2] == source.shape[:2] and inside.sum() > 100 and error < 0.05, error


def test_cancel_stops_a_running_trace_and_builds_nothing(bpy_ext, installed):
    """Cancel takes effect after the current step; the job reports cancelled and the scene is untouched."""
    bpy = bpy_ext
    request_mod, job_mod = sys.modules[f"{MODULE}.operators.request"], sys.modules[f"{MODULE}.operators.job"]
    settings = bpy.context.scene.world_tracing
    settings.steps = 200
    before = datablock_counts(bpy)
    request, name, image = request_mod.make_request(bpy.context, 0, str(SAMPLE))
    messages = []
    job = job_mod.TraceJob(
        request, lambda lpm: messages.append("done"), messages.append, lambda: messages.append("cancelled")
    )
    job.start()
    deadline = time.monotonic() + 60
    while job.progress.step < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    job.cancel()
    stopped_at = job.progress.step
    while not job.poll():
        time.sleep(0.01)
    assert messages == ["cancelled"]
    assert job.progress.step <= stopped_at + 1 < 200
    assert datablock_counts(bpy) == before


@pytest.mark.parametrize(
    "name, message",
    [
        ("missing.png", "not found"),
        ("truncated.png", "not a readable image"),
        ("not_an_image.png", "not a readable image"),
        ("one_pixel.png", "too small"),
        ("transparent.png", "no foreground"),
    ],
)
def test_bad_input_gives_a_clear_error_and_builds_nothing(bpy_ext, name, message):
    """Unusable images end in one clear error, and no data block is created."""
    bpy = bpy_ext
    before = datablock_counts(bpy)
    with pytest.raises(RuntimeError, match=message):
        trace(bpy, DATA / name)
    assert datablock_counts(bpy) == before


def test_huge_image_is_refused_before_decoding(bpy_ext, tmp_path):
    """An 8000×6000 image is refused with the size limit in the message; nothing is built."""
    bpy = bpy_ext
    path = tmp_path / "huge.png"
    Image.new("RGB", (8000, 6000), (120, 130, 140)).save(path)
    before = datablock_counts(bpy)
    with pytest.raises(RuntimeError, match="8000×6000.*downscale"):
        trace(bpy, path)
    assert datablock_counts(bpy) == before


@pytest.mark.parametrize("name", ["rgba16.png", "grey16.png", "grey.png", "white_background.jpg"])
def test_unusual_but_valid_images_trace(bpy_ext, name):
    """16-bit, greyscale and JPEG images with a plain background trace like any other."""
    bpy = bpy_ext
    assert trace(bpy, DATA / name) == {"FINISHED"}
    assert result_collection(bpy) is not None


def test_resampling_50_times_leaves_no_data_blocks_behind(bpy_ext):
    """Resample replaces the result in place: after 50 of them the data-block counts are those of one trace."""
    bpy = bpy_ext
    bpy.context.scene.world_tracing.steps = 1
    trace(bpy)
    after_one = datablock_counts(bpy)
    for _ in range(50):
        assert bpy.ops.world_tracing.resample() == {"FINISHED"}
    assert datablock_counts(bpy) == after_one
    assert [c.name for c in bpy.data.collections] == ["WT object_rgba"]


def test_resample_replaces_geometry_in_place_with_the_next_seed(bpy_ext):
    """Resample keeps the collection, bumps the seed and changes the points."""
    bpy = bpy_ext
    trace(bpy)
    obj = next(o for o in result_collection(bpy).objects if o.name.endswith("points L0"))
    before = np.empty(len(obj.data.vertices) * 3, np.float32)
    obj.data.vertices.foreach_get("co", before)
    assert bpy.ops.world_tracing.resample() == {"FINISHED"}
    collection = result_collection(bpy)
    assert collection.name == "WT object_rgba" and collection["wt_seed"] == 1
    obj = next(o for o in collection.objects if o.name.endswith("points L0"))
    after = np.empty(len(obj.data.vertices) * 3, np.float32)
    obj.data.vertices.foreach_get("co", after)
    assert before.shape != after.shape or not np.allclose(before, after)


def test_export_writes_the_edited_result(bpy_ext, tmp_path):
    """Export writes .npz/.ply/.obj; the .npz round-trips the points, including a user's edit."""
    from core.layered import LayeredPointMap

    bpy = bpy_ext
    trace(bpy)
    collection = result_collection(bpy)
    obj = next(o for o in collection.objects if o.name.endswith("points L0"))
    obj.data.vertices[0].co.z += 0.25  # an edit: 0.25 up in the world is 0.25 along -y in camera space
    pix = obj.data.attributes["wt_pixel"].data[0].value
    assert bpy.ops.world_tracing.export(directory=str(tmp_path)) == {"FINISHED"}
    lpm = LayeredPointMap.load(tmp_path / "WT_object_rgba.npz")
    assert (tmp_path / "WT_object_rgba.ply").stat().st_size > 0 and (tmp_path / "WT_object_rgba.obj").stat().st_size > 0
    row, col = divmod(pix, lpm.width)
    co = obj.data.vertices[0].co
    np.testing.assert_allclose(lpm.points[0, row, col], [co.x, -co.z, co.y], atol=1e-5)
    assert lpm.valid[0].sum() == len(obj.data.vertices)


def layer0_points(collection) -> np.ndarray:
    obj = next(o for o in collection.objects if o.name.endswith("points L0"))
    co = np.empty(len(obj.data.vertices) * 3, np.float32)
    obj.data.vertices.foreach_get("co", co)
    return co


def test_samples_can_be_flipped_and_kept(bpy_ext):
    """With two samples the result flips between them in place, back again exactly, and one can be kept."""
    bpy = bpy_ext
    settings = bpy.context.scene.world_tracing
    settings.samples = 2
    trace(bpy)
    assert result_collection(bpy)["wt_samples"] == 2
    first = layer0_points(result_collection(bpy))
    assert bpy.ops.world_tracing.show_sample(index=1) == {"FINISHED"}
    assert result_collection(bpy).name == "WT object_rgba" and settings.sample == 1
    second = layer0_points(result_collection(bpy))
    assert first.shape != second.shape or not np.allclose(first, second)
    assert bpy.ops.world_tracing.show_sample(index=0) == {"FINISHED"}
    np.testing.assert_array_equal(layer0_points(result_collection(bpy)), first)
    assert bpy.ops.world_tracing.show_sample(index=1) == {"FINISHED"}
    assert bpy.ops.world_tracing.keep_sample() == {"FINISHED"}
    kept = sys.modules[f"{MODULE}.operators.state"].samples[result_collection(bpy)["wt_result_id"]]
    assert "samples_points" not in kept.extras
    assert kept.valid[0].sum() * 3 == len(second)  # the sample shown, as built (the edge filter ran in the trace)
    assert not bpy.ops.world_tracing.show_sample.poll()


def test_edge_filter_drops_flying_points_from_points_and_meshes(bpy_ext):
    """The panel's Edge Filter (on by default) reaches the trace: with the same seed, the filtered result's
    points are a strict subset of the unfiltered one's, layer by layer, the same points where kept, and its
    meshes lose the faces around the dropped ones; every point left carries wt_layer and wt_pixel."""
    bpy = bpy_ext
    settings = bpy.context.scene.world_tracing
    assert settings.edge_filter == 1.0
    built = {}
    for strength in (0.0, 1.0):
        settings.edge_filter = strength
        assert trace(bpy, seed=5) == {"FINISHED"}
        points, faces = {}, 0
        for obj in result_collection(bpy).objects:
            if obj.type != "MESH":
                continue
            co, layer, pixel = vertex_arrays(obj)
            if obj.modifiers.get("Points"):
                points[int(layer[0])] = dict(zip(pixel.tolist(), co.tolist(), strict=True))
            faces += len(obj.data.polygons)
        built[strength] = points, faces
    (everything, curtain), (kept, faces) = built[0.0], built[1.0]
    assert sum(map(len, kept.values())) < sum(map(len, everything.values())) and faces < curtain
    for k, layer in kept.items():
        assert set(layer) <= set(everything[k])
        np.testing.assert_allclose([layer[p] for p in layer], [everything[k][p] for p in layer], atol=1e-6)


def test_a_packed_blender_image_traces_and_is_never_deleted(bpy_ext):
    """An image already in Blender (packed: read from its pixels) is traced and survives replacing the result."""
    bpy = bpy_ext
    image = bpy.data.images.load(str(SAMPLE))
    image.pack()
    bpy.context.scene.world_tracing.image = image
    assert bpy.ops.world_tracing.trace_image() == {"FINISHED"}
    collection = result_collection(bpy)
    assert collection["wt_image"] == image and collection["wt_source"] == ""
    assert bpy.ops.world_tracing.trace_image(seed=3) == {"FINISHED"}
    assert image.name in bpy.data.images and len(bpy.data.images) == 1


def test_check_model_describes_the_chosen_checkpoint(bpy_ext, interop):
    """Check Model names the model, its mode and resolution and estimates the time, for ours and official files."""
    bpy = bpy_ext
    job = sys.modules[f"{MODULE}.operators.job"]
    assert bpy.ops.world_tracing.check_model() == {"FINISHED"}
    prefs = bpy.context.preferences.addons[MODULE].preferences
    card = job.model_card(prefs.checkpoint)
    assert card["image_size"] == 32 and card["mode"] == "object" and card["seconds_per_step"] > 0
    prefs.checkpoint = str(interop / "tiny_filmadaln_state_dict.safetensors")
    assert bpy.ops.world_tracing.check_model() == {"FINISHED"}
    card = job.model_card(prefs.checkpoint)
    layers = json.loads((interop / "tiny_filmadaln_config.json").read_text())["model_kwargs"]["num_layers"]
    assert card["name"] == "official custom" and card["mode"] == "scene" and card["layers"] == layers


def test_an_official_layout_checkpoint_traces_through_the_extension(bpy_ext, interop):
    """The released layout (here the reference model's random weights) traces end to end in Blender."""
    bpy = bpy_ext
    bpy.context.preferences.addons[MODULE].preferences.checkpoint = str(interop / "tiny_state_dict.safetensors")
    bpy.context.scene.world_tracing.steps = 2
    assert trace(bpy) == {"FINISHED"}
    lpm = sys.modules[f"{MODULE}.operators.state"].samples[result_collection(bpy)["wt_result_id"]]
    layers = json.loads((interop / "tiny_config.json").read_text())["model_kwargs"]["num_layers"]
    assert lpm.num_layers == layers and lpm.valid[0].any()


LINKED = r"""
import os, sys
import bpy
bpy.context.preferences.extensions.repos.new(name="dev", module="dev", custom_directory=sys.argv[1], source="USER")
assert bpy.ops.preferences.addon_enable(module="bl_ext.dev.world_tracing") == {"FINISHED"}
assert hasattr(bpy.ops.world_tracing, "trace_image")
print("enabled")
"""


def test_source_tree_enables_as_a_linked_development_extension(tmp_path):
    """The repository itself, linked into a local extension repository, enables in Blender (its manifest
    lists no platforms or wheels: Blender refuses empty lists)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "world_tracing").symlink_to(ROOT, target_is_directory=True)
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "user"))
    run = subprocess.run(
        [sys.executable, "-c", LINKED, str(repo)], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert run.returncode == 0 and "enabled" in run.stdout, run.stderr[-2000:]


def test_a_mask_image_from_the_panel_sets_the_object(bpy_ext, tmp_path):
    """The panel's Mask (object mode) replaces the image's alpha: layer 0's points are exactly the mask's
    white pixels; scene mode ignores it and sends the Far Limit instead."""
    bpy = bpy_ext
    W, H = Image.open(SAMPLE).size
    mask = np.zeros((H, W), np.uint8)
    mask[: H // 2, W // 3 :] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    settings = bpy.context.scene.world_tracing
    settings.mask = bpy.data.images.load(str(tmp_path / "mask.png"))
    settings.edge_filter = 0.0
    assert trace(bpy) == {"FINISHED"}
    obj = next(o for o in result_collection(bpy).objects if o.modifiers.get("Points") and o.name.endswith("L0"))
    pixels = np.empty(len(obj.data.vertices), np.int32)
    obj.data.attributes["wt_pixel"].data.foreach_get("value", pixels)
    np.testing.assert_array_equal(np.sort(pixels), np.flatnonzero(mask))
    make_request = sys.modules[f"{MODULE}.operators.request"].make_request
    request, _, _ = make_request(bpy.context, 0, str(SAMPLE))
    assert request.mask is not None and request.far_limit == 0.0
    settings.mode, settings.far_limit = "scene", 5.0
    request, _, _ = make_request(bpy.context, 0, str(SAMPLE))
    assert request.mask is None and request.far_limit == 5.0


def test_each_mode_takes_its_shipped_model_unless_the_preferences_choose_one(bpy_ext, random_checkpoint):
    """With no model chosen in the preferences, object mode traces with the shipped object model and
    scene mode with the shipped scene model; a chosen model serves both."""
    from pathlib import Path

    bpy = bpy_ext
    make_request = sys.modules[f"{MODULE}.operators.request"].make_request
    prefs, settings = bpy.context.preferences.addons[MODULE].preferences, bpy.context.scene.world_tracing
    for chosen in ("", str(random_checkpoint)):
        prefs.checkpoint = chosen
        for mode, shipped in (("object", "wt-tiny.safetensors"), ("scene", "wt-tiny-scene.safetensors")):
            settings.mode = mode
            request, _, _ = make_request(bpy.context, 0, str(SAMPLE))
            assert Path(request.checkpoint).name == (Path(chosen).name if chosen else shipped), (chosen, mode)


def test_big_images_are_traced_at_the_geometry_size(bpy_ext, tmp_path):
    """An image larger than Geometry Size is traced scaled down: the result (camera, render size, points'
    wt_pixel) is at the smaller size, with its own image, and the user's image is left as it was."""
    bpy = bpy_ext
    Image.open(SAMPLE).resize((300, 200)).save(tmp_path / "wide.png")
    settings = bpy.context.scene.world_tracing
    settings.image = user_image = bpy.data.images.load(str(tmp_path / "wide.png"))
    settings.geometry_size = 120
    assert bpy.ops.world_tracing.trace_image() == {"FINISHED"}
    collection = result_collection(bpy)
    assert tuple(collection["wt_resolution"]) == (120, 80)
    scene = bpy.context.scene
    assert (scene.render.resolution_x, scene.render.resolution_y) == (120, 80)
    assert tuple(collection["wt_image"].size) == (120, 80) and tuple(user_image.size) == (300, 200)
    for obj in collection.objects:
        if obj.type == "MESH":
            pixels = np.empty(len(obj.data.vertices), np.int32)
            obj.data.attributes["wt_pixel"].data.foreach_get("value", pixels)
            assert pixels.max() < 120 * 80
    settings.geometry_size = 0
    assert bpy.ops.world_tracing.trace_image() == {"FINISHED"}
    assert tuple(result_collection(bpy)["wt_resolution"]) == (300, 200)
