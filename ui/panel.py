"""The sidebar: 3D View › Sidebar › World Tracing."""

from __future__ import annotations

import os

import bpy

from ..operators import state
from ..operators.job import model_card
from ..operators.pytorch import pending_restart
from ..operators.request import selected_checkpoint
from ..operators.scene import result_layers
from ..operators.trace import sample_count
from ..preferences import preferences


class WT_PT_trace(bpy.types.Panel):
    bl_label = "World Tracing"
    bl_idname = "WT_PT_trace"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "World Tracing"

    def draw(self, context) -> None:
        layout = self.layout
        settings = context.scene.world_tracing
        layout.template_ID_preview(settings, "image", open="image.open", rows=3, cols=6)
        opaque = settings.image is not None and settings.image.depth in (8, 24, 48, 96)
        if settings.mode == "object" and opaque and settings.mask is None:
            layout.label(text="No alpha: a plain background will be keyed out", icon="INFO")

        col = layout.column(align=True)
        col.use_property_split = True
        col.prop(settings, "mode")
        if settings.mode == "object":
            row = col.row(align=True)
            row.label(text="Mask")
            row.template_ID(settings, "mask", open="image.open")
        elif settings.mode == "scene":
            col.prop(settings, "far_limit")
        col.prop(settings, "steps")
        col.prop(settings, "seed")
        col.prop(settings, "samples")
        col = layout.column(align=True)
        col.use_property_split = True
        col.prop(settings, "output")
        col.prop(settings, "geometry_size")
        col.prop(settings, "layers")
        col.prop(settings, "edge_filter")
        if settings.output != "POINTS":
            col.prop(settings, "max_rel_jump")
        if settings.output != "MESHES":
            col.prop(settings, "point_size")
        col = layout.column(align=True)
        col.use_property_split = True
        col.prop(settings, "solid")
        if settings.solid:
            col.prop(settings, "solid_detail")
            col.prop(settings, "solid_hidden")
            col.prop(settings, "solid_max_faces")

        prefs = preferences(context)
        try:
            card = model_card(selected_checkpoint(context))
        except FileNotFoundError:
            card = None
        row = layout.row(align=True)
        if card:
            eta = card["seconds_per_step"] * settings.steps * settings.samples
            row.label(
                text=f"{card['name']} · {card['mode']} · {card['image_size']}px · "
                f"≈ {_duration(eta)} on {card['device']}",
                icon="NETWORK_DRIVE",
            )
        else:
            name = os.path.basename(prefs.checkpoint) if prefs.checkpoint else "shipped tiny model"
            row.label(text=f"Model: {name}", icon="NETWORK_DRIVE")
        row.operator("world_tracing.check_model", text="", icon="VIEWZOOM")
        if pending_restart(context):
            layout.label(text="PyTorch source changed: restart Blender to use it", icon="INFO")

        job = state.job
        if state.busy() and job.abandoned:
            layout.label(text="Stopping the previous trace…", icon="SORTTIME")
        elif state.busy():
            p = job.progress
            eta = f" · {p.eta:.0f} s left" if p.eta is not None else ""
            label = f" · {p.label}" if p.label else ""
            text = f"Step {p.step}/{p.total}{label}{eta}" if p.stage == "sampling" else p.stage.capitalize() + "…"
            row = layout.row(align=True)
            row.progress(factor=p.fraction, type="BAR", text=text)
            row.operator("world_tracing.cancel", text="", icon="CANCEL")
        elif settings.mode == "dynamic":
            layout.operator("world_tracing.trace_clip", icon="SEQUENCE")
        else:
            layout.operator("world_tracing.trace_image", icon="OUTLINER_OB_POINTCLOUD")
        level, text = state.message
        if level in ("ERROR", "WARNING"):
            box = layout.box()
            for i, line in enumerate(_wrap(text, 40)):
                box.label(text=line, icon="ERROR" if i == 0 and level == "ERROR" else ("INFO" if i == 0 else "BLANK1"))


class WT_PT_result(bpy.types.Panel):
    bl_label = "Result"
    bl_idname = "WT_PT_result"
    bl_parent_id = "WT_PT_trace"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "World Tracing"

    @classmethod
    def poll(cls, context) -> bool:
        return context.scene.world_tracing.result is not None

    def draw(self, context) -> None:
        layout = self.layout
        settings = context.scene.world_tracing
        layout.prop(settings, "result", text="")
        row = layout.row(align=True)
        row.operator("world_tracing.view_camera", text="Image View", icon="CAMERA_DATA").novel = False
        row.operator("world_tracing.view_camera", text="Novel View", icon="VIEW_CAMERA").novel = True
        layers = sorted(result_layers(settings.result))
        if layers:
            row = layout.row(align=True)
            row.label(text="Layers")
            for k in layers:
                row.prop(settings, "show_layers", index=k, text=str(k), toggle=True)
        count = sample_count(settings.result)
        if count > 1:
            shown = min(settings.sample, count - 1)
            row = layout.row(align=True)
            row.operator("world_tracing.show_sample", text="", icon="TRIA_LEFT").index = (shown - 1) % count
            row.label(text=f"Sample {shown + 1} of {count}")
            row.operator("world_tracing.show_sample", text="", icon="TRIA_RIGHT").index = (shown + 1) % count
            row.operator("world_tracing.keep_sample", text="", icon="CHECKMARK")
        elif int(settings.result.get("wt_samples", 1)) > 1:
            layout.label(text="Samples not in memory (file reopened): Resample", icon="INFO")
        row = layout.row(align=True)
        row.operator("world_tracing.resample", icon="FILE_REFRESH")
        row.operator("world_tracing.export", icon="EXPORT")
        layout.operator("world_tracing.release", icon="TRASH")


def _wrap(text: str, width: int) -> list[str]:
    words, lines, line = text.split(), [], ""
    for w in words:
        if line and len(line) + len(w) + 1 > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    return lines + [line] if line else lines


def _duration(seconds: float) -> str:
    return (
        f"{seconds:.0f} s"
        if seconds < 90
        else (f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h")
    )
