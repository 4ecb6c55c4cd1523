"""Trace Image and its follow-ups: Cancel, Resample, samples, cameras, Check Model, Release.

Operators stay thin: read settings (request.py), hand plain values to the job (job.py), and let
the scene builder (scene.py) turn the result into Blender data on the main thread. Errors are
reported once, at this boundary, and nothing half-built is left in the scene. Every change to the
scene is one undo step. Runtime state lives in state.py.
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import nullcontext

import bpy
from bpy.props import BoolProperty, IntProperty, StringProperty

from ..core.layered import LayeredPointMap
from ..preferences import preferences
from . import state
from .job import TraceJob, TraceRequest, check_model, release_models
from .pytorch import prepare_torch
from .request import make_clip_request, make_request, selected_checkpoint
from .scene import BuildOptions, build_clip_result, build_result, result_name


def tell(level: str, text: str) -> None:
    """Show a message in the panel and the Info log (also from timers, through an operator)."""
    state.message = (level, text)
    print(f"World Tracing: {text}")
    if not bpy.app.background:
        bpy.ops.world_tracing.report("EXEC_DEFAULT", level=level, message=text)


def redraw() -> None:
    for window in getattr(bpy.context.window_manager, "windows", []):
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                area.tag_redraw()


def push_undo(message: str) -> None:
    """One undo step for a change made outside an operator's own execute (timers, async results)."""
    windows = getattr(bpy.context.window_manager, "windows", [])
    override = (
        bpy.context.temp_override(window=windows[0]) if len(windows) and bpy.context.window is None else nullcontext()
    )
    with override:
        bpy.ops.ed.undo_push(message=message)


def find_result(result_id: str) -> bpy.types.Collection | None:
    """The result collection with this id, if it still exists."""
    return next((c for c in bpy.data.collections if result_id and c.get("wt_result_id") == result_id), None)


def build_options(settings) -> BuildOptions:
    return BuildOptions(
        output=settings.output,
        layers=tuple(range(settings.layers)),
        max_rel_jump=settings.max_rel_jump,
        point_size=settings.point_size,
        solid=settings.solid,
        solid_detail=settings.solid_detail,
        solid_hidden=settings.solid_hidden,
        solid_max_faces=settings.solid_max_faces,
    )


# ----------------------------------------------------------------------------------------------
# The trace: start, deliver, stop
# ----------------------------------------------------------------------------------------------


def finish(
    scene_name: str, stem: str, request: TraceRequest, image, lpm: LayeredPointMap, started: float, replace_id: str
) -> None:
    """Main thread: turn a traced map into a result collection (a new one, or `replace_id` rebuilt in
    place), select it in the panel and push an undo step."""
    scene = bpy.data.scenes[scene_name]
    settings = scene.world_tracing
    properties = {
        "wt_source": request.image_path,
        "wt_seed": request.seed,
        "wt_steps": request.steps,
        "wt_mode": request.mode,
        "wt_samples": request.samples,
        "wt_model": bpy.path.basename(request.checkpoint),
    }
    replace = find_result(replace_id)
    if image is not None and tuple(image.size) != (lpm.width, lpm.height):
        image = None  # traced scaled down (Geometry Size): the result gets its own image at its size
    t0 = time.perf_counter()
    options, no_solid = build_options(settings), ""
    try:
        collection = build_result(scene, lpm, result_name(stem), options, image, properties, replace)
    except ValueError as e:  # the solid was refused (nothing built): keep the trace, without it
        if not options.solid:
            raise
        no_solid = f"; no solid: {e}"
        options = dataclasses.replace(options, solid=False)
        collection = build_result(scene, lpm, result_name(stem), options, image, properties, replace)
    state.samples[collection["wt_result_id"]] = lpm
    settings.result = collection
    settings["sample"] = 0
    for k in range(len(settings.show_layers)):
        settings.show_layers[k] = True
    push_undo("Resample" if replace is not None else "Trace Image")
    tell(
        "WARNING" if no_solid else "INFO",
        f"traced {stem}: {int(lpm.valid.sum())} points in {lpm.num_layers} layers "
        f"({time.monotonic() - started:.1f} s, scene built in {time.perf_counter() - t0:.2f} s){no_solid}",
    )


def finish_clip(scene_name: str, stem: str, request: TraceRequest, background, clip, started: float) -> None:
    """Main thread: turn a traced clip into an animated result collection, select it, push an undo step."""
    scene = bpy.data.scenes[scene_name]
    properties = {
        "wt_source": request.clip_path,
        "wt_seed": request.seed,
        "wt_steps": request.steps,
        "wt_mode": "dynamic",
        "wt_model": bpy.path.basename(request.checkpoint),
    }
    t0 = time.perf_counter()
    options = dataclasses.replace(build_options(scene.world_tracing), solid=False)
    collection = build_clip_result(scene, clip, result_name(stem), options, background, properties)
    scene.world_tracing.result = collection
    push_undo("Trace Clip")
    T = len(clip.image)
    tell(
        "WARNING" if scene.world_tracing.solid else "INFO",
        f"traced {stem}: {T} frames, {int(clip.valid.sum())} points (frames 1–{T} on the timeline; "
        f"{time.monotonic() - started:.1f} s, scene built in {time.perf_counter() - t0:.2f} s)"
        + ("; no solid for clips" if scene.world_tracing.solid else ""),
    )


def new_job(context, request: TraceRequest, stem: str, image, replace_id: str = "") -> TraceJob:
    """The (not yet started) job of a request, whose outcome goes to the scene it was asked from and
    ends up in `state.message`: INFO (built), WARNING (cancelled) or ERROR."""
    scene_name, started = context.scene.name, time.monotonic()

    def on_done(result):
        try:
            if request.clip_path:
                finish_clip(scene_name, stem, request, image, result, started)
            else:
                finish(scene_name, stem, request, image, result, started, replace_id)
        except Exception as e:  # building failed: already rolled back
            tell("ERROR", f"could not build the result: {e}")

    def on_error(message: str):
        tell("ERROR", message)

    def on_cancel():
        tell("WARNING", "trace cancelled; nothing was changed")

    return TraceJob(request, on_done, on_error, on_cancel)


def start_trace(context, request: TraceRequest, stem: str, image, replace_id: str = "") -> None:
    """Start a job: in a worker thread with a timer (UI), or right here (background mode). A finished
    outcome of the previous job that was not picked up yet is delivered first."""
    if state.job is not None:
        state.job.poll()
    state.job = new_job(context, request, stem, image, replace_id)
    if bpy.app.background:
        state.job.run_blocking()
    else:
        state.job.start()
        bpy.app.timers.register(drain, first_interval=0.1)


def drain() -> float | None:
    """Timer callback (main thread): deliver the job's outcome when it arrives; redraw progress."""
    redraw()
    if state.job is None or state.job.poll():
        return None
    return 0.1


def stop(release: bool = False) -> None:
    """A file is closed or the extension disabled: stop the job (its outcome is dropped, with a
    message), forget runtime state, optionally free the model."""
    state.clear(release)
    if bpy.app.timers.is_registered(drain):
        bpy.app.timers.unregister(drain)
    if state.message[1]:
        print(f"World Tracing: {state.message[1]}")


def run_from_operator(operator, context, request: TraceRequest, stem: str, image, replace_id: str = "") -> set[str]:
    """Start a trace for an operator; in background mode it has finished on return, FINISHED when a result
    was built (perhaps with a warning) and CANCELLED when not."""
    before = result_pointer(context.scene)
    start_trace(context, request, stem, image, replace_id)
    if not bpy.app.background:
        return {"FINISHED"}
    level, text = state.message
    operator.report({level}, text)
    return {"FINISHED"} if level != "ERROR" and result_pointer(context.scene) != before else {"CANCELLED"}


def result_pointer(scene) -> int:
    """Which collection the panel's result is (0: none); a rebuilt result is a new collection."""
    result = scene.world_tracing.result
    return result.as_pointer() if result is not None else 0


# ----------------------------------------------------------------------------------------------
# Samples
# ----------------------------------------------------------------------------------------------


def result_samples(collection: bpy.types.Collection | None) -> LayeredPointMap | None:
    """The traced map (with every sample) behind a result, if it is still in memory."""
    return state.samples.get(collection.get("wt_result_id", "")) if collection is not None else None


def sample_count(collection: bpy.types.Collection | None) -> int:
    lpm = result_samples(collection)
    return len(lpm.extras["samples_points"]) if lpm is not None and "samples_points" in lpm.extras else 1


def sample_map(lpm: LayeredPointMap, index: int) -> LayeredPointMap:
    """Sample `index` of a traced map as a map of its own."""
    return LayeredPointMap(
        lpm.extras["samples_points"][index], lpm.extras["samples_valid"][index], lpm.intrinsics, lpm.image
    )


# ----------------------------------------------------------------------------------------------
# Operators
# ----------------------------------------------------------------------------------------------


class WT_OT_trace_image(bpy.types.Operator):
    """Trace the image into layered 3D geometry seen through a matched camera"""

    bl_idname = "world_tracing.trace_image"
    bl_label = "Trace Image"
    bl_options = {"REGISTER"}  # the undo step is pushed when the result is built (after the worker)

    filepath: StringProperty(
        name="File",
        subtype="FILE_PATH",
        default="",
        options={"SKIP_SAVE"},
        description="Image file to trace (default: the panel's image)",
    )
    seed: IntProperty(name="Seed", default=-1, min=-1, options={"SKIP_SAVE"}, description="-1: the panel's seed")

    @classmethod
    def poll(cls, context) -> bool:
        return not state.busy()

    def execute(self, context):
        settings = context.scene.world_tracing
        try:
            request, stem, image = make_request(context, settings.seed if self.seed < 0 else self.seed, self.filepath)
        except (ValueError, FileNotFoundError) as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        return run_from_operator(self, context, request, stem, image)


class WT_OT_trace_clip(bpy.types.Operator):
    """Trace a clip (a folder of frames, an animated image, or an image sequence or movie loaded in Blender) into
    layered geometry that plays with the timeline"""

    bl_idname = "world_tracing.trace_clip"
    bl_label = "Trace Clip"
    bl_options = {"REGISTER"}

    filepath: StringProperty(
        name="Clip", subtype="FILE_PATH", default="", options={"SKIP_SAVE"}, description="Empty: the panel's clip"
    )
    seed: IntProperty(name="Seed", default=-1, min=-1, options={"SKIP_SAVE"}, description="-1: the panel's seed")

    @classmethod
    def poll(cls, context) -> bool:
        return not state.busy()

    def execute(self, context):
        settings = context.scene.world_tracing
        try:
            request, stem, background = make_clip_request(
                context, settings.seed if self.seed < 0 else self.seed, self.filepath
            )
        except (ValueError, FileNotFoundError) as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        return run_from_operator(self, context, request, stem, background)


class WT_OT_resample(bpy.types.Operator):
    """Trace the active result's image again with the next seed, replacing its geometry in place"""

    bl_idname = "world_tracing.resample"
    bl_label = "Resample"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context) -> bool:
        return context.scene.world_tracing.result is not None and not state.busy()

    def execute(self, context):
        settings = context.scene.world_tracing
        collection = settings.result
        seed = int(collection.get("wt_seed", settings.seed)) + 1
        source = collection.get("wt_source", "")
        image = collection.get("wt_image")
        own_image = image if image is not None and not image.get("wt_generated") else None
        try:
            request, stem, image = make_request(context, seed, source, None if source else own_image)
        except (ValueError, FileNotFoundError) as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        settings.seed = seed
        return run_from_operator(self, context, request, stem, image, collection.get("wt_result_id", ""))


class WT_OT_cancel(bpy.types.Operator):
    """Stop the running trace after its current step"""

    bl_idname = "world_tracing.cancel"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context) -> bool:
        return state.busy() and not state.job.abandoned

    def execute(self, context):
        state.job.cancel()
        return {"FINISHED"}


class WT_OT_show_sample(bpy.types.Operator):
    """Show another of the result's samples (rebuilt in place)"""

    bl_idname = "world_tracing.show_sample"
    bl_label = "Show Sample"
    bl_options = {"REGISTER", "UNDO"}

    index: IntProperty(name="Sample", default=0, min=0)

    @classmethod
    def poll(cls, context) -> bool:
        return sample_count(context.scene.world_tracing.result) > 1 and not state.busy()

    def execute(self, context):
        settings = context.scene.world_tracing
        collection = settings.result
        lpm = result_samples(collection)
        index = min(self.index, sample_count(collection) - 1)
        properties = {k: collection[k] for k in collection.keys() if k.startswith("wt_") and k != "wt_image"}
        try:
            new = build_result(
                context.scene,
                sample_map(lpm, index),
                collection.name,
                build_options(settings),
                collection.get("wt_image"),
                properties,
                replace=collection,
            )
        except Exception as e:
            self.report({"ERROR"}, f"could not build sample {index + 1}: {e}")
            return {"CANCELLED"}
        settings.result = new
        settings.sample = index
        return {"FINISHED"}


class WT_OT_keep_sample(bpy.types.Operator):
    """Keep the sample shown and forget the others"""

    bl_idname = "world_tracing.keep_sample"
    bl_label = "Keep This Sample"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context) -> bool:
        return sample_count(context.scene.world_tracing.result) > 1

    def execute(self, context):
        settings = context.scene.world_tracing
        collection = settings.result
        lpm = result_samples(collection)
        index = min(settings.sample, sample_count(collection) - 1)
        state.samples[collection["wt_result_id"]] = sample_map(lpm, index)
        collection["wt_samples"] = 1
        settings.sample = 0
        return {"FINISHED"}


class WT_OT_view_camera(bpy.types.Operator):
    """Look through the matched camera or the novel-view camera of the active result"""

    bl_idname = "world_tracing.view_camera"
    bl_label = "View Camera"

    novel: BoolProperty(name="Novel View", default=False)

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
    """Read the chosen checkpoint (tensor shapes, not weights): which model, mode and resolution, and a time estimate"""

    bl_idname = "world_tracing.check_model"
    bl_label = "Check Model"

    def execute(self, context):
        path = ""
        try:
            prepare_torch(context)
            path = selected_checkpoint(context)
            card = check_model(path, preferences(context).device)
        except (ValueError, FileNotFoundError) as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        except Exception as e:  # anything else a strange file provokes: still one message naming it
            self.report({"ERROR"}, f"{path}: cannot be read as a model ({type(e).__name__}: {e})")
            return {"CANCELLED"}
        self.report(
            {"INFO"},
            f"{card['name']}: {card['mode']}, {card['image_size']} px, {card['layers']} layers, "
            f"{card['parameters'] / 1e6:.0f}M parameters, "
            f"≈ {card['seconds_per_step']:.1f} s per step on {card['device']}",
        )
        return {"FINISHED"}


class WT_OT_release(bpy.types.Operator):
    """Free the loaded model's memory (and GPU memory)"""

    bl_idname = "world_tracing.release"
    bl_label = "Release Model"

    @classmethod
    def poll(cls, context) -> bool:
        return not state.busy()

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
