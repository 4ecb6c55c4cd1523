"""World Tracing for Blender: one image → layered, pixel-aligned 3D geometry seen through a matched camera.

`core/` holds everything that does not need Blender (model, sampler, geometry, files); `operators/`
and `ui/` are the Blender side, `preferences.py` sits between them. Imports run one way:
ui → operators → core. Registration is in one place: classes in order, then properties and
handlers, all undone in reverse.
"""

from __future__ import annotations

import bpy
from bpy.app.handlers import persistent

from . import operators, ui
from .operators import pytorch, trace
from .preferences import WT_Preferences

CLASSES = (WT_Preferences, *ui.CLASSES, *operators.CLASSES)


@persistent
def _stop_on_load(*_args) -> None:
    """A file is being opened or reset: stop any running trace (its result would land in the new
    file) and forget the runtime state of the old file (its traced samples)."""
    trace.stop()


@persistent
def _defaults_on_load(*_args) -> None:
    ui.properties.apply_preference_defaults(bpy.data.scenes)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    ui.register()
    bpy.app.handlers.load_pre.append(_stop_on_load)
    bpy.app.handlers.load_post.append(_defaults_on_load)
    bpy.app.timers.register(_defaults_on_load, first_interval=0.0)  # bpy.data is not open during register
    pytorch.warm_up()


def unregister() -> None:
    trace.stop(release=True)
    pytorch.forget_paths()
    for handlers, handler in (
        (bpy.app.handlers.load_pre, _stop_on_load),
        (bpy.app.handlers.load_post, _defaults_on_load),
    ):
        if handler in handlers:
            handlers.remove(handler)
    if bpy.app.timers.is_registered(_defaults_on_load):
        bpy.app.timers.unregister(_defaults_on_load)
    ui.unregister()
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
