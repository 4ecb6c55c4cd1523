"""Trace Image and its follow-ups: Cancel, Resample, sample choice, cameras, Release.

Operators stay thin: read settings, hand plain values to the job (job.py), and let the scene
builder (scene.py) turn the result into Blender data on the main thread. Errors are reported
once, at this boundary, and nothing half-built is left in the scene.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import bpy
import numpy as np
from bpy.props import IntProperty, StringProperty

from ..core.layered import LayeredPointMap
from ..ui.preferences import preferences
from .job import TraceJob, TraceRequest, check_model, release_models
from .scene import BuildOptions, build_result, result_name

_job: TraceJob | None = None  # the one trace that may run
_samples: dict[str, LayeredPointMap] = {}  # result collection name → traced map with all its samples
_last_message: tuple[str, str] = ("", "")  # (level, text) shown in the panel


def current_job() -> TraceJob | None:
    return _job


def last_message() -> tuple[str, str]:
    return _last_message


def _tell(level: str, text: str) -> None:
    """Show a message in the panel and the Info log (also from timers, through an operator)."""
    global _last_message
    _last_message = (level, text)
    print(f"World Tracing: {text}")
    if not bpy.app.background:
        bpy.ops.world_tracing.report("EXEC_DEFAULT", level=level, message=text)


def _redraw() -> None:
    for window in getattr(bpy.context.window_manager, "windows", []):
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                area.tag_redraw()


# ----------------------------------------------------------------------------------------------
# Requests and results
# ----------------------------------------------------------------------------------------------

def image_pixels(image: bpy.types.Image) -> np.ndarray:
    """(H, W, 4) uint8 of a Blender image, top row first (main thread)."""
    W, H = image.size
    if W == 0 or H == 0:
        raise ValueError(f"image '{image.name}' has no pixels (is the file missing?)")
    px = np.empty(W * H * image.channels, np.float32)
    image.pixels.foreach_get(px)
    px = px.reshape(H, W, image.channels)[::-1]
    if image.channels == 1:
        px = np.repeat(px, 3, axis=-1)
    if px.shape[-1] == 3:
        px = np.concatenate([px, np.ones((H, W, 1), np.float32)], axis=-1)
    return (np.clip(px, 0, 1) * 255 + 0.5).astype(np.uint8)


def editor_image(context) -> bpy.types.Image | None:
    """The image shown in an Image Editor of the current screen, if any."""
    screen = getattr(context, "screen", None)
    for area in getattr(screen, "areas", []):
        if area.type == "IMAGE_EDITOR" and area.spaces.active.image is not None:
            return area.spaces.active.image
    return None


def selected_checkpoint(context) -> str:
    """The checkpoint the preferences choose (the shipped one when empty)."""
    prefs = preferences(context)
    if prefs.checkpoint:
        return bpy.path.abspath(prefs.checkpoint)
    from ..core.weights import default_checkpoint

    return str(default_checkpoint())


def make_request(context, filepath: str, seed: int) -> tuple[TraceRequest, str, bpy.types.Image | None]:
    """(request, result name, Blender image to reuse) from the panel settings and preferences."""
    settings, prefs = context.scene.world_tracing, preferences(context)
    request = TraceRequest(checkpoint=selected_checkpoint(context), device=prefs.device, mode=settings.mode, steps=settings.steps,
                           seed=seed, samples=settings.samples)
    image = None
    if filepath:
        request.image_path = bpy.path.abspath(filepath)
        name = Path(request.image_path).stem
    elif settings.image is not None or editor_image(context) is not None:
        image = settings.image or editor_image(context)
        path = bpy.path.abspath(image.filepath) if image.filepath else ""
        if path and os.path.isfile(path) and not image.packed_file and not image.is_dirty:
            request.image_path = path
        else:
            request.pixels = image_pixels(image)
        name = Path(image.name).stem
    else:
        raise ValueError("no image: open one in the World Tracing panel, or pass filepath=")
    return request, result_name(name), image


def build_options(settings) -> BuildOptions:
    return BuildOptions(output=settings.output, layers=tuple(range(settings.layers)),
                        max_rel_jump=settings.max_rel_jump, point_size=settings.point_size)


def finish(scene_name: str, name: str, request: TraceRequest, image, lpm: LayeredPointMap, started: float) -> None:
    """Main thread: turn a traced map into the result collection and select it in the panel."""
    scene = bpy.data.scenes[scene_name]
    settings = scene.world_tracing
    properties = {"wt_source": request.image_path, "wt_seed": request.seed, "wt_steps": request.steps,
                  "wt_mode": request.mode, "wt_samples": request.samples,
                  "wt_model": Path(request.checkpoint).name}
    t0 = time.perf_counter()
    collection = build_result(scene, lpm, name, build_options(settings), image, properties)
    _samples[collection.name] = lpm
    settings.result = collection
    settings["sample"] = 0  # without triggering a rebuild
    for k in range(len(settings.show_layers)):
        settings.show_layers[k] = True
    _tell("INFO", f"traced {name}: {int(lpm.valid.sum())} points in {lpm.num_layers} layers "
                  f"({time.monotonic() - started:.1f} s, scene built in {time.perf_counter() - t0:.2f} s)")


def start_trace(context, request: TraceRequest, name: str, image) -> None:
    """Start the job: in a worker thread with a timer (UI), or right here (background mode).

    The outcome ends up in `last_message()`: INFO (built), WARNING (cancelled) or ERROR.
    """
    global _job
    scene_name, started = context.scene.name, time.monotonic()

    def on_done(lpm):
        try:
            finish(scene_name, name, request, image, lpm, started)
        except Exception as e:  # building failed: already rolled back
            _tell("ERROR", f"could not build the result: {e}")

    def on_error(message: str):
        _tell("ERROR", message)

    def on_cancel():
        _tell("WARNING", "trace cancelled; nothing was changed")

    _job = TraceJob(request, on_done, on_error, on_cancel)
    if bpy.app.background:
        _job.run_blocking()
    else:
        _job.start()
        bpy.app.timers.register(drain, first_interval=0.1)


def drain() -> float | None:
    """Timer callback (main thread): deliver the job's outcome when it arrives; redraw progress."""
    _redraw()
    if _job is None or _job.poll():
        return None
    return 0.1


def stop_job(wait: float = 5.0) -> None:
    """Cancel a running trace and drop its outcome (file closed, extension disabled)."""
    global _job
    if _job is not None and _job.running:
        _job.cancel(wait)
    _job = None
    if bpy.app.timers.is_registered(drain):
        bpy.app.timers.unregister(drain)


def show_sample(context, index: int) -> None:
    """Rebuild the active result from sample `index` of its trace (in place)."""
    settings = context.scene.world_tracing
    collection = settings.result
    lpm = _samples.get(collection.name) if collection is not None else None
    if lpm is None or "samples_points" not in lpm.extras:
        return
    index = min(index, len(lpm.extras["samples_points"]) - 1)
    sample = LayeredPointMap(lpm.extras["samples_points"][index], lpm.extras["samples_valid"][index], lpm.intrinsics, lpm.image)
    properties = {k: collection[k] for k in collection.keys() if k.startswith("wt_") and k != "wt_image"}
    name = collection.name
    new = build_result(context.scene, sample, name, build_options(settings), collection.get("wt_image"), properties)
    _samples[new.name] = lpm
    settings.result = new


# ----------------------------------------------------------------------------------------------
# Operators
# ----------------------------------------------------------------------------------------------

class WT_OT_trace_image(bpy.types.Operator):
    """Trace the image into layered 3D geometry seen through a matched camera"""

    bl_idname = "world_tracing.trace_image"
    bl_label = "Trace Image"
    bl_options = {"REGISTER"}

    filepath: StringProperty(name="File", subtype="FILE_PATH", default="", options={"SKIP_SAVE"},
                             description="Image file to trace (default: the panel's image)")
    seed: IntProperty(name="Seed", default=-1, min=-1, options={"SKIP_SAVE"}, description="-1: the panel's seed")

    @classmethod
    def poll(cls, context) -> bool:
        return _job is None or not _job.running

    def execute(self, context):
        settings = context.scene.world_tracing
        try:
            request, name, image = make_request(context, self.filepath, settings.seed if self.seed < 0 else self.seed)
        except (ValueError, FileNotFoundError) as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        start_trace(context, request, name, image)
        if bpy.app.background:
            level, text = _last_message
            self.report({level}, text)
            return {"FINISHED"} if level == "INFO" else {"CANCELLED"}
        return {"FINISHED"}


class WT_OT_cancel(bpy.types.Operator):
    """Stop the running trace after its current step"""

    bl_idname = "world_tracing.cancel"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context) -> bool:
        return _job is not None and _job.running

    def execute(self, context):
        _job.cancel()
        return {"FINISHED"}


class WT_OT_resample(bpy.types.Operator):
    """Trace the active result's image again with the next seed, replacing its geometry"""

    bl_idname = "world_tracing.resample"
    bl_label = "Resample"

    @classmethod
    def poll(cls, context) -> bool:
        settings = context.scene.world_tracing
        return settings.result is not None and (_job is None or not _job.running)

    def execute(self, context):
        settings = context.scene.world_tracing
        collection = settings.result
        settings.seed = int(collection.get("wt_seed", settings.seed)) + 1
        source = collection.get("wt_source", "")
        return bpy.ops.world_tracing.trace_image(filepath=source, seed=settings.seed) if source else \
            bpy.ops.world_tracing.trace_image(seed=settings.seed)


class WT_OT_keep_sample(bpy.types.Operator):
    """Keep the sample shown and forget the others"""

    bl_idname = "world_tracing.keep_sample"
    bl_label = "Keep This Sample"

    def execute(self, context):
        settings = context.scene.world_tracing
        lpm = _samples.get(settings.result.name) if settings.result else None
        if lpm is not None and "samples_points" in lpm.extras:
            k = settings.sample
            _samples[settings.result.name] = LayeredPointMap(lpm.extras["samples_points"][k], lpm.extras["samples_valid"][k],
                                                             lpm.intrinsics, lpm.image)
            settings["sample"] = 0
        return {"FINISHED"}


class WT_OT_view_camera(bpy.types.Operator):
    """Look through the matched camera or the novel-view camera of the active result"""

    bl_idname = "world_tracing.view_camera"
    bl_label = "View Camera"

    novel: bpy.props.BoolProperty(name="Novel View", default=False)

    @classmethod
    def poll(cls, context) -> bool:
        return context.scene.world_tracing.result is not None

    def execute(self, context):
        collection = context.scene.world_tracing.result
        cameras = [o for o in collection.objects if o.type == "CAMERA" and (o.parent is not None) == self.novel]
        if not cameras:
            self.report({"ERROR"}, "this result has no such camera")
            return {"CANCELLED"}
        context.scene.camera = cameras[0]
        area = context.area
        if area is not None and area.type == "VIEW_3D":
            area.spaces.active.region_3d.view_perspective = "CAMERA"
        return {"FINISHED"}


class WT_OT_check_model(bpy.types.Operator):
    """Read the chosen checkpoint (not its weights): which model, mode and resolution, and a time estimate"""

    bl_idname = "world_tracing.check_model"
    bl_label = "Check Model"

    def execute(self, context):
        try:
            card = check_model(selected_checkpoint(context), preferences(context).device)
        except (ValueError, FileNotFoundError) as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        self.report({"INFO"}, f"{card['name']}: {card['mode']}, {card['image_size']} px, {card['layers']} layers, "
                              f"{card['parameters'] / 1e6:.0f}M parameters, ≈ {card['seconds_per_step']:.1f} s per step on {card['device']}")
        return {"FINISHED"}


class WT_OT_release(bpy.types.Operator):
    """Free the loaded model's memory (and GPU memory)"""

    bl_idname = "world_tracing.release"
    bl_label = "Release Model"

    @classmethod
    def poll(cls, context) -> bool:
        return _job is None or not _job.running

    def execute(self, context):
        release_models()
        return {"FINISHED"}


class WT_OT_report(bpy.types.Operator):
    """Internal: put a message in the Info log"""

    bl_idname = "world_tracing.report"
    bl_label = "Report"
    bl_options = {"INTERNAL"}

    level: StringProperty(default="INFO")
    message: StringProperty(default="")

    def execute(self, context):
        self.report({self.level}, self.message)
        return {"FINISHED"}
