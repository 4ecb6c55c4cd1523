"""What a reliability probe of the extension found, each kept as a regression test: replaced model files,
state across files, undo, names, samples, camera data per result, worker life-cycle, odd images."""

from __future__ import annotations

import shutil
import sys
import time

import numpy as np
import pytest
from conftest import DATA, MODULE, SAMPLE, datablock_counts, result_collection, trace


def module(name: str):
    return sys.modules[f"{MODULE}.{name}"]


def point_count(collection) -> int:
    return sum(len(o.data.vertices) for o in collection.objects if o.type == "MESH" and o.modifiers.get("Points"))


def test_a_checkpoint_overwritten_in_place_is_loaded_afresh(bpy_ext, random_checkpoint, interop, tmp_path):
    """Copying another model over the loaded file (same inode) neither crashes nor serves the old model."""
    bpy = bpy_ext
    path = tmp_path / "model.safetensors"
    shutil.copyfile(random_checkpoint, path)
    prefs = bpy.context.preferences.addons[MODULE].preferences
    prefs.checkpoint = str(path)
    bpy.context.scene.world_tracing.steps = 2
    assert trace(bpy) == {"FINISHED"}
    first = module("operators.state").samples[result_collection(bpy)["wt_result_id"]]
    with open(interop / "tiny_state_dict.safetensors", "rb") as src, open(path, "r+b") as dst:  # in place
        dst.truncate(0)
        shutil.copyfileobj(src, dst)
    assert trace(bpy) == {"FINISHED"}
    second = module("operators.state").samples[result_collection(bpy)["wt_result_id"]]
    assert first.num_layers != second.num_layers


def test_opening_another_file_forgets_the_traced_samples(bpy_ext, tmp_path):
    """Samples belong to the file they were traced in: after opening a file they are gone, and a result
    from a saved file offers no flips instead of rebuilding from someone else's trace."""
    bpy = bpy_ext
    settings = bpy.context.scene.world_tracing
    settings.samples, settings.steps = 2, 2
    trace(bpy)
    assert bpy.ops.world_tracing.show_sample.poll()
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "first.blend"))
    bpy.ops.wm.open_mainfile(filepath=str(tmp_path / "first.blend"))
    assert module("operators.state").samples == {}
    assert bpy.context.scene.world_tracing.result is not None
    assert not bpy.ops.world_tracing.show_sample.poll() and not bpy.ops.world_tracing.keep_sample.poll()


def test_trace_resample_and_sample_flips_are_one_undo_step_each(bpy_ext):
    """One Ctrl+Z undoes only the trace (the user's earlier edit stays); redo brings it back."""
    bpy = bpy_ext
    settings = bpy.context.scene.world_tracing
    settings.samples, settings.steps = 2, 2
    bpy.ops.ed.undo_push(message="start")
    empty = bpy.data.objects.new("user edit", None)
    bpy.context.scene.collection.objects.link(empty)
    bpy.ops.ed.undo_push(message="user edit")
    trace(bpy)
    assert bpy.ops.world_tracing.show_sample("EXEC_DEFAULT", True, index=1) == {"FINISHED"}  # as a click: undo=True
    assert bpy.ops.world_tracing.resample() == {"FINISHED"}
    assert bpy.context.scene.world_tracing.result["wt_seed"] == 1
    bpy.ops.ed.undo()  # the resample
    assert bpy.context.scene.world_tracing.result["wt_seed"] == 0
    bpy.ops.ed.undo()  # the flip
    assert bpy.context.scene.world_tracing.sample == 0
    bpy.ops.ed.undo()  # the trace
    assert "WT object_rgba" not in bpy.data.collections and "user edit" in bpy.data.objects
    bpy.ops.ed.redo()
    assert "WT object_rgba" in bpy.data.collections and "user edit" in bpy.data.objects


def test_results_never_overwrite_each_other_by_name(bpy_ext, tmp_path):
    """Two images with the same stem, or stems sharing their first 40 characters, give separate results."""
    bpy = bpy_ext
    bpy.context.scene.world_tracing.steps = 1
    long = "a_very_long_file_name_that_goes_on_and_on_and_on"
    paths = [
        tmp_path / "one" / "object.png",
        tmp_path / "two" / "object.png",
        tmp_path / f"{long}_1.png",
        tmp_path / f"{long}_2.png",
    ]
    for path, source in zip(paths, [SAMPLE, DATA / "white_background.jpg", SAMPLE, SAMPLE], strict=False):
        path.parent.mkdir(exist_ok=True)
        shutil.copyfile(source, path)
    counts = {}
    for path in paths:
        assert trace(bpy, path) == {"FINISHED"}
        counts[result_collection(bpy).name] = point_count(result_collection(bpy))
    results = [c for c in bpy.data.collections if c.name.startswith("WT ")]
    assert len(counts) == len(results) == 4
    assert {c.name: point_count(c) for c in results} == counts  # the first results kept their geometry
    assert all(len(o.name) <= 63 for c in results for o in c.objects)


def test_keep_sample_with_the_slider_past_the_last_sample_keeps_the_last(bpy_ext):
    """A sample index above the number of samples is clamped instead of raising."""
    bpy = bpy_ext
    settings = bpy.context.scene.world_tracing
    settings.samples, settings.steps = 2, 2
    trace(bpy)
    lpm = module("operators.state").samples[result_collection(bpy)["wt_result_id"]]
    last = lpm.extras["samples_valid"][1]
    settings.sample = 5
    assert bpy.ops.world_tracing.keep_sample() == {"FINISHED"}
    kept = module("operators.state").samples[result_collection(bpy)["wt_result_id"]]
    np.testing.assert_array_equal(kept.valid, last)


def synthetic(width: int, height: int, fx: float, fy: float):
    """A one-layer map of a plane 2 m away, seen by a camera with these focal lengths."""
    from core.layered import LayeredPointMap

    v, u = np.mgrid[0:height, 0:width] + 0.5
    K = np.array([[fx, 0, width / 2], [0, fy, height / 2], [0, 0, 1]], np.float32)
    z = np.full((height, width), 2.0)
    points = np.stack([(u - K[0, 2]) / fx * z, (v - K[1, 2]) / fy * z, z], -1)[None]
    return LayeredPointMap(points, np.ones((1, height, width), bool), K, np.full((height, width, 3), 128, np.uint8))


def test_each_result_keeps_its_own_camera_for_export_and_rendering(bpy_ext, tmp_path):
    """Exporting an earlier result writes its own intrinsics, and selecting it restores its render size
    and pixel aspect (they are kept on the result, not read from the scene)."""
    from core.layered import LayeredPointMap

    bpy = bpy_ext
    scene_mod = module("operators.scene")
    scene = bpy.context.scene
    first, second = synthetic(60, 40, 600.0, 620.0), synthetic(50, 70, 300.0, 290.0)
    a = scene_mod.build_result(scene, first, "WT first", scene_mod.BuildOptions())
    b = scene_mod.build_result(scene, second, "WT second", scene_mod.BuildOptions())
    settings = scene.world_tracing
    settings.result = b
    settings.result = a
    assert (scene.render.resolution_x, scene.render.resolution_y) == (60, 40) and scene.camera.name == "WT first camera"
    assert bpy.ops.world_tracing.export(directory=str(tmp_path), ply=False, obj=False) == {"FINISHED"}
    np.testing.assert_allclose(LayeredPointMap.load(tmp_path / "WT_first.npz").intrinsics, first.intrinsics, rtol=1e-4)
    settings.result = b
    assert (scene.render.resolution_x, scene.render.resolution_y) == (50, 70)


def test_a_model_with_impossible_sizes_gives_one_message_naming_the_file(bpy_ext, tmp_path):
    """num_heads = 0 or tensors of other shapes than the config: Check Model and Trace refuse with the file name."""
    import json

    from safetensors.torch import load_file, save_file

    bpy = bpy_ext
    prefs = bpy.context.preferences.addons[MODULE].preferences
    source = prefs.checkpoint
    tensors = load_file(source)
    from safetensors import safe_open

    with safe_open(source, framework="pt") as f:
        meta = dict(f.metadata())
    config = json.loads(meta["config"])
    broken = {
        "zero_heads.safetensors": ({**config, "num_heads": 0}, tensors),
        "wrong_shapes.safetensors": ({**config, "dim": config["dim"] * 2}, tensors),
    }
    for name, (cfg, state) in broken.items():
        save_file(state, str(tmp_path / name), metadata={**meta, "config": json.dumps(cfg)})
        prefs.checkpoint = str(tmp_path / name)
        with pytest.raises(RuntimeError, match=name):
            bpy.ops.world_tracing.check_model()
        before = datablock_counts(bpy)
        with pytest.raises(RuntimeError, match=name):
            trace(bpy)
        assert datablock_counts(bpy) == before


def test_an_exr_opened_in_blender_traces_through_blenders_decoder(bpy_ext, tmp_path):
    """Pillow cannot read OpenEXR; Blender can, and its linear pixels are shown as Blender displays them."""
    bpy = bpy_ext
    rgba = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(SAMPLE).convert("RGBA"), np.float32) / 255
    H, W = rgba.shape[:2]
    linear = rgba.copy()
    linear[..., :3] = np.where(
        rgba[..., :3] <= 0.04045, rgba[..., :3] / 12.92, ((rgba[..., :3] + 0.055) / 1.055) ** 2.4
    )
    image = bpy.data.images.new("exr source", W, H, alpha=True, float_buffer=True)
    image.pixels.foreach_set(linear[::-1].ravel())
    image.filepath_raw = str(tmp_path / "object.exr")
    image.file_format = "OPEN_EXR"
    image.save()
    bpy.data.images.remove(image)
    before = len(bpy.data.images)
    settings = bpy.context.scene.world_tracing
    settings.steps, settings.edge_filter = 1, 0.0  # every foreground pixel kept: the decoding is under test
    assert trace(bpy, tmp_path / "object.exr") == {"FINISHED"}
    lpm = module("operators.state").samples[result_collection(bpy)["wt_result_id"]]
    inside = rgba[..., 3] > 0.99
    assert np.abs(lpm.image[inside] / 255.0 - rgba[..., :3][inside]).max() < 2 / 255
    assert lpm.valid[0].sum() > 0.9 * inside.sum()
    assert len(bpy.data.images) == before + 1  # the result's own image; the decoder's copy is gone


def test_disabling_the_extension_frees_the_loaded_model(bpy_ext):
    """After a trace the model stays loaded for the next one; disabling the extension lets it go."""
    bpy = bpy_ext
    bpy.context.scene.world_tracing.steps = 1
    trace(bpy)
    job = module("operators.job")
    assert job._model_cache
    bpy.ops.preferences.addon_disable(module=MODULE)
    try:
        assert not job._model_cache
    finally:
        bpy.ops.preferences.addon_enable(module=MODULE)


def start_worker(bpy, steps: int):
    """A trace running in a worker thread as the UI starts it (background mode would run it blocking)."""
    state, request_mod, trace_mod = module("operators.state"), module("operators.request"), module("operators.trace")
    bpy.context.scene.world_tracing.steps = steps
    request, stem, image = request_mod.make_request(bpy.context, 0, str(SAMPLE))
    state.job = trace_mod.new_job(bpy.context, request, stem, image)
    state.job.start()
    return state.job


def test_opening_a_file_while_tracing_stops_the_worker_before_another_trace(bpy_ext):
    """The running worker is told to stop; no new trace can start until it has, and its result is never
    built into the newly opened file; the panel says what happened."""
    bpy = bpy_ext
    state = module("operators.state")
    job = start_worker(bpy, steps=200)
    deadline = time.monotonic() + 60
    while job.progress.step < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    bpy.ops.wm.read_homefile(use_empty=True)
    assert job.abandoned and "stopped" in state.message[1]
    if job.running:
        assert not bpy.ops.world_tracing.trace_image.poll()
    job._thread.join(60)
    assert not job.running and job.progress.step < 200
    assert bpy.ops.world_tracing.trace_image.poll()
    assert not [c for c in bpy.data.collections if c.name.startswith("WT ")]


def test_a_finished_result_is_built_before_the_next_trace_starts(bpy_ext):
    """A result that finished while nobody polled is built when the next trace starts, not dropped."""
    bpy = bpy_ext
    job = start_worker(bpy, steps=1)
    job._thread.join(60)
    assert trace(bpy, DATA / "white_background.jpg") == {"FINISHED"}
    names = sorted(c.name for c in bpy.data.collections if c.name.startswith("WT "))
    assert names == ["WT object_rgba", "WT white_background"]
