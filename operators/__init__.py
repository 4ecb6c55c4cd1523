"""Operators: everything that acts on Blender data (main thread), plus the background trace job."""

from . import pytorch
from .export import WT_OT_export
from .trace import (
    WT_OT_cancel,
    WT_OT_check_model,
    WT_OT_keep_sample,
    WT_OT_release,
    WT_OT_report,
    WT_OT_resample,
    WT_OT_show_sample,
    WT_OT_trace_clip,
    WT_OT_trace_image,
    WT_OT_view_camera,
)

CLASSES = (
    WT_OT_trace_image,
    WT_OT_trace_clip,
    WT_OT_cancel,
    WT_OT_resample,
    WT_OT_show_sample,
    WT_OT_keep_sample,
    WT_OT_view_camera,
    WT_OT_check_model,
    WT_OT_release,
    WT_OT_export,
    WT_OT_report,
    *pytorch.CLASSES,
)
