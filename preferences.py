"""Extension preferences: device, model file, defaults, and where user data lives.

A neutral module at the top of the extension (as Dream Textures keeps it), so that both `ui/` and
`operators/` read preferences while imports still run ui → operators → core.
"""

from __future__ import annotations

import bpy
from bpy.props import EnumProperty, IntProperty, StringProperty

PACKAGE = __package__  # the extension's module, e.g. bl_ext.user_default.world_tracing


class WT_Preferences(bpy.types.AddonPreferences):
    bl_idname = PACKAGE

    device: EnumProperty(
        name="Device",
        default="auto",
        items=[
            ("auto", "Automatic", "CUDA GPU if present, then Apple MPS, then CPU"),
            ("cuda", "CUDA", "NVIDIA GPU"),
            ("mps", "MPS", "Apple GPU"),
            ("cpu", "CPU", "Processor only (slow for large models)"),
        ],
    )
    checkpoint: StringProperty(
        name="Model",
        subtype="FILE_PATH",
        default="",
        description="Checkpoint file (ours .safetensors, or an official model.pt); empty: the shipped model",
    )
    default_steps: IntProperty(name="Default Steps", default=20, min=1, max=200)
    default_samples: IntProperty(name="Default Samples", default=1, min=1, max=8)

    def draw(self, context) -> None:
        layout = self.layout
        layout.prop(self, "device")
        layout.prop(self, "checkpoint")
        row = layout.row()
        row.prop(self, "default_steps")
        row.prop(self, "default_samples")
        layout.label(text=f"User data: {user_data_dir()}", icon="FILE_FOLDER")


def preferences(context=None) -> WT_Preferences:
    return (context or bpy.context).preferences.addons[PACKAGE].preferences


def user_data_dir() -> str:
    """Writable folder of the extension (kept when the extension updates)."""
    return bpy.utils.extension_path_user(PACKAGE, create=True)
