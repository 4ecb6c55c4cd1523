"""Panels, settings and preferences (everything the user sees)."""

from . import properties
from .panel import WT_PT_result, WT_PT_trace
from .properties import WT_Settings

CLASSES = (WT_Settings, WT_PT_trace, WT_PT_result)


def register() -> None:
    properties.register()


def unregister() -> None:
    properties.unregister()
