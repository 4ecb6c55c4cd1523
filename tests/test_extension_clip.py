"""Clips in Blender (the extension installed from its zip): Trace Clip on a folder of frames gives
layered geometry that plays with the timeline and renders on every frame, with wt_frame on every point;
bad clips build nothing; undo takes the result away."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from conftest import MODULE, datablock_counts, result_collection
from PIL import Image

FRAMES = 3
SHIFT = 4  # pixels the square moves right per frame


def frames_folder(folder, count: int = FRAMES):
    """PNG frames of a textured square moving right on a transparent background (object mode per frame)."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    texture = rng.integers(60, 255, (24, 24, 3), dtype=np.uint8)
    for k in range(count):
        rgba = np.zeros((48, 64, 4), np.uint8)
        rgba[12:36, 8 + SHIFT * k : 32 + SHIFT * k, :3] = texture
        rgba[12:36, 8 + SHIFT * k : 32 + SHIFT * k, 3] = 255
        Image.fromarray(rgba).save(folder / f"frame_{k:03d}.png")
    return folder


def visible_geometry(bpy, collection, frame: int):
    """Names of the result's geometry objects that render on `frame`."""
    bpy.context.scene.frame_set(frame)
    return sorted(o.name for o in collection.all_objects if o.type == "MESH" and not o.hide_render)


def test_a_clip_plays_with_the_timeline_and_renders_on_every_frame(bpy_ext, tmp_path):
    """Each frame shows only its own layers (wt_frame = frame − 1 on every point); renders through the
    matched camera on frames 1 and 3 show the square where it is in those frames."""
    bpy = bpy_ext
    settings = bpy.context.scene.world_tracing
    settings.mode, settings.steps, settings.edge_filter, settings.layers = "dynamic", 2, 0.0, 2
    settings.output = "POINTS"
    assert bpy.ops.world_tracing.trace_clip(filepath=str(frames_folder(tmp_path / "clip"))) == {"FINISHED"}
    collection = result_collection(bpy)
    scene = bpy.context.scene
    progress = sys.modules[f"{MODULE}.operators.state"].job.progress  # the panel shows the frame being traced
    assert progress.label == f"frame {FRAMES} of {FRAMES}" and progress.step == progress.total == 2 * FRAMES
    assert collection["wt_frames"] == FRAMES and (scene.frame_start, scene.frame_end) == (1, FRAMES)
    for frame in range(1, FRAMES + 1):
        shown = visible_geometry(bpy, collection, frame)
        assert shown and all(name.endswith(f"F{frame}") for name in shown), (frame, shown)
        for name in shown:
            attributes = bpy.data.objects[name].data.attributes
            values = np.empty(len(attributes["wt_frame"].data), np.int32)
            attributes["wt_frame"].data.foreach_get("value", values)
            assert (values == frame - 1).all() and "wt_layer" in attributes and "wt_pixel" in attributes
    scene.render.engine = "CYCLES"
    scene.cycles.device, scene.cycles.samples = "CPU", 4
    scene.render.film_transparent = True
    columns = []
    for frame in (1, 3):
        scene.frame_set(frame)
        scene.render.filepath = str(tmp_path / f"frame{frame}.png")
        bpy.ops.render.render(write_still=True)
        alpha = np.asarray(Image.open(tmp_path / f"frame{frame}.png"))[..., 3] > 0
        assert alpha.shape == (48, 64) and alpha.mean() > 0.1
        columns.append(np.nonzero(alpha)[1].mean())
    assert columns[1] - columns[0] == pytest.approx(2 * SHIFT, abs=1.5), columns


def test_bad_clips_build_nothing_and_undo_removes_a_clip(bpy_ext, tmp_path):
    bpy = bpy_ext
    settings = bpy.context.scene.world_tracing
    settings.mode, settings.steps = "dynamic", 1
    single = frames_folder(tmp_path / "single", 1)
    before = datablock_counts(bpy)
    with pytest.raises(RuntimeError, match="one frame only"):
        bpy.ops.world_tracing.trace_clip(filepath=str(single))
    with pytest.raises(RuntimeError, match="no clip"):
        bpy.ops.world_tracing.trace_clip()  # no image sequence open
    with pytest.raises(RuntimeError, match="use Trace Clip"):
        bpy.ops.world_tracing.trace_image(filepath=str(single / "frame_000.png"))
    assert datablock_counts(bpy) == before
    bpy.ops.ed.undo_push(message="before the clip")
    assert bpy.ops.world_tracing.trace_clip(filepath=str(frames_folder(tmp_path / "clip"))) == {"FINISHED"}
    assert datablock_counts(bpy) != before
    bpy.ops.ed.undo()
    assert result_collection(bpy) is None and datablock_counts(bpy)["objects"] == before["objects"]


def test_clip_mode_uses_the_shipped_dynamic_model_by_default(bpy_ext, tmp_path):
    """With no checkpoint chosen in the preferences, Trace Clip runs the shipped temporal model: three
    frames in one window, every frame's layer 0 inside its own square."""
    bpy = bpy_ext
    bpy.context.preferences.addons[MODULE].preferences.checkpoint = ""
    settings = bpy.context.scene.world_tracing
    settings.mode, settings.steps, settings.edge_filter, settings.output = "dynamic", 2, 0.0, "POINTS"
    assert bpy.ops.world_tracing.trace_clip(filepath=str(frames_folder(tmp_path / "clip"))) == {"FINISHED"}
    progress = sys.modules[f"{MODULE}.operators.state"].job.progress
    assert progress.label == f"frames 1–{FRAMES} of {FRAMES}" and progress.step == progress.total == 2
    collection = result_collection(bpy)
    assert collection["wt_model"] == "wt-tiny-dynamic.safetensors" and collection["wt_frames"] == FRAMES
    for frame in range(1, FRAMES + 1):
        layer0 = [n for n in visible_geometry(bpy, collection, frame) if "L0" in n]
        assert layer0, frame
        pixels = np.empty(len(bpy.data.objects[layer0[0]].data.attributes["wt_pixel"].data), np.int32)
        bpy.data.objects[layer0[0]].data.attributes["wt_pixel"].data.foreach_get("value", pixels)
        cols = pixels % 64
        assert cols.min() >= 8 + SHIFT * (frame - 1) - 1 and cols.max() <= 32 + SHIFT * (frame - 1)
