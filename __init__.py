"""World Tracing for Blender: one image → layered, pixel-aligned 3D geometry seen through a matched camera.

`core/` holds everything that does not need Blender (model, sampler, geometry, files); `operators/`
and `ui/` are the Blender side. Registration is in one place: classes in order, then properties
and handlers, all undone in reverse.
"""

from __future__ import annotations

import bpy
from bpy.app.handlers import persistent

from . import operators, ui


@persistent
def _stop_on_load(*_args) -> None:
    """A file is being opened or reset: stop any running trace, whose result would land in it."""
    operators.trace.stop_job()


@persistent
def _defaults_on_load(*_args) -> None:
    ui.properties.apply_preference_defaults(bpy.data.scenes)


def register() -> None:
    for cls in ui.CLASSES + operators.CLASSES:
        bpy.utils.register_class(cls)
    ui.register()
    bpy.app.handlers.load_pre.append(_stop_on_load)
    bpy.app.handlers.load_post.append(_defaults_on_load)
    bpy.app.timers.register(_defaults_on_load, first_interval=0.0)  # bpy.data is not open during register


def unregister() -> None:
    operators.trace.stop_job()
    for handlers, handler in ((bpy.app.handlers.load_pre, _stop_on_load), (bpy.app.handlers.load_post, _defaults_on_load)):
        if handler in handlers:
            handlers.remove(handler)
    if bpy.app.timers.is_registered(_defaults_on_load):
        bpy.app.timers.unregister(_defaults_on_load)
    ui.unregister()
    for cls in reversed(ui.CLASSES + operators.CLASSES):
        bpy.utils.unregister_class(cls)
