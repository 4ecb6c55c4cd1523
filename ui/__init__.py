"""Panels, settings and preferences (everything the user sees)."""

from . import properties
from .panel import WT_PT_result, WT_PT_trace
from .preferences import WT_Preferences
from .properties import WT_Settings

CLASSES = (WT_Settings, WT_Preferences, WT_PT_trace, WT_PT_result)


def register() -> None:
    properties.register()


def unregister() -> None:
    properties.unregister()
