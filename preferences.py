"""Extension preferences: PyTorch source, device, model file, defaults, and where user data lives.

A neutral module at the top of the extension (as Dream Textures keeps it), so that both `ui/` and
`operators/` read preferences while imports still run ui → operators → core.
"""

from __future__ import annotations

import bpy
from bpy.props import EnumProperty, IntProperty, StringProperty

from . import torch_source

PACKAGE = __package__  # the extension's module, e.g. bl_ext.user_default.world_tracing


def _check_environment(self, context) -> None:
    """An environment is checked when chosen: one that cannot serve leaves the bundled PyTorch in place."""
    self.torch_message = ""
    if self.torch_source != "environment" or not self.torch_environment:
        return
    try:
        torch_source.site_packages(bpy.path.abspath(self.torch_environment))
    except ValueError as e:
        self.torch_source = "bundled"  # (runs this check again, which clears the message: set it after)
        self.torch_message = f"{e}; keeping the bundled PyTorch"


class WT_Preferences(bpy.types.AddonPreferences):
    bl_idname = PACKAGE

    torch_source: EnumProperty(
        name="PyTorch",
        default="bundled",
        items=[
            ("bundled", "Bundled (CPU)", "The PyTorch inside the extension: runs everywhere, on the processor"),
            ("download", "GPU Build", "A PyTorch for this GPU, downloaded on request into the extension's user folder"),
            (
                "environment",
                "Existing Environment",
                "The PyTorch of a Python environment you have (same Python version)",
            ),
        ],
        description="Where PyTorch comes from; a change applies when PyTorch is first loaded (restart Blender)",
        update=_check_environment,
    )
    torch_environment: StringProperty(
        name="Environment",
        subtype="DIR_PATH",
        default="",
        description="A venv or conda environment (or its site-packages) holding a PyTorch built for Blender's Python",
        update=_check_environment,
    )
    torch_message: StringProperty(name="PyTorch Message", default="", options={"SKIP_SAVE"})

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
        self.draw_pytorch(layout.box())
        layout.prop(self, "device")
        layout.prop(self, "checkpoint")
        row = layout.row()
        row.prop(self, "default_steps")
        row.prop(self, "default_samples")
        layout.label(text=f"User data: {user_data_dir()}", icon="FILE_FOLDER")

    def draw_pytorch(self, box) -> None:
        """Source, its state (GPU found, install progress, what PyTorch sees) and its buttons."""
        box.prop(self, "torch_source")
        if self.torch_message:
            box.label(text=self.torch_message, icon="ERROR")
        job = torch_source.installing
        if self.torch_source == "environment":
            box.prop(self, "torch_environment")
        elif self.torch_source == "download":
            gpu = torch_source.detect_gpu_cached()
            try:
                build = torch_source.gpu_build(gpu)
                box.label(text=f"{', '.join(gpu.names)} (driver {gpu.driver}): build {build}", icon="INFO")
            except ValueError as e:
                box.label(text=str(e), icon="ERROR")
            builds = torch_source.installed_builds(user_data_dir())
            box.label(
                text=f"Installed: {', '.join(builds) if builds else 'none'}", icon="CHECKMARK" if builds else "BLANK1"
            )
        if torch_source.install_running() and job is not None:
            row = box.row()
            row.progress(factor=job.fraction, type="BAR", text=f"{job.message} ({job.fraction:.0%})")
            row.operator("world_tracing.cancel_torch_install", text="", icon="CANCEL")
        elif job is not None and job.error:
            box.label(text=f"Last install: {job.error}", icon="ERROR")
        row = box.row()
        if self.torch_source == "download":
            row.operator("world_tracing.install_torch", icon="IMPORT")
            if not bpy.app.online_access:
                box.label(text="Online access is off (Preferences → System → Network)", icon="ERROR")
        row.operator("world_tracing.check_device", icon="VIEWZOOM")
        row.operator("world_tracing.remove_torch_builds", icon="TRASH")
        for line in torch_source.seen_devices:
            box.label(text=line)
        box.label(text="A new source applies when PyTorch is first loaded: restart Blender after switching")


def preferences(context=None) -> WT_Preferences:
    return (context or bpy.context).preferences.addons[PACKAGE].preferences


def user_data_dir() -> str:
    """Writable folder of the extension (kept when the extension updates)."""
    return bpy.utils.extension_path_user(PACKAGE, create=True)
