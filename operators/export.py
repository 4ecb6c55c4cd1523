"""Export the active result (with the user's edits) as the `trace` .npz, a PLY point cloud and OBJ meshes."""

from __future__ import annotations

from pathlib import Path

import bpy
from bpy.props import BoolProperty, FloatProperty, StringProperty

from ..core.export import export_meshes_obj, export_points_ply
from .scene import layered_from_result


class WT_OT_export(bpy.types.Operator):
    """Write the active result as .npz (points, valid, intrinsics, image), .ply points and .obj meshes"""

    bl_idname = "world_tracing.export"
    bl_label = "Export Result"

    directory: StringProperty(name="Folder", subtype="DIR_PATH")
    npz: BoolProperty(name="Layered .npz", default=True)
    ply: BoolProperty(name="Points .ply", default=True)
    obj: BoolProperty(name="Meshes .obj", default=True)
    max_rel_jump: FloatProperty(name="Depth Jump", default=0.05, min=0.0, max=2.0)

    @classmethod
    def poll(cls, context) -> bool:
        return context.scene.world_tracing.result is not None

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        collection = context.scene.world_tracing.result
        folder = Path(bpy.path.abspath(self.directory or "//"))
        stem = bpy.path.clean_name(collection.name)
        try:
            lpm = layered_from_result(collection)
            written = []
            if self.npz:
                lpm.save(folder / f"{stem}.npz")
                written.append(f"{stem}.npz")
            if self.ply:
                export_points_ply(lpm, folder / f"{stem}.ply")
                written.append(f"{stem}.ply")
            if self.obj:
                export_meshes_obj(lpm, folder / f"{stem}.obj", self.max_rel_jump)
                written.append(f"{stem}.obj")
        except (OSError, ValueError) as e:
            self.report({"ERROR"}, f"export failed: {e}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"wrote {', '.join(written)} to {folder}")
        return {"FINISHED"}
