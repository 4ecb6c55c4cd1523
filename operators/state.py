"""The extension's runtime state, which is not saved with the .blend: the trace job, the traced
samples of each result, and the panel's last message. One owner: everything else reads and sets
it here, and `clear` (a file is opened, the extension is disabled) forgets it all.
"""

from __future__ import annotations

from ..core.layered import LayeredPointMap
from .job import TraceJob, release_models

job: TraceJob | None = None  # the one trace that may run (or a stopped one whose worker has not ended yet)
samples: dict[str, LayeredPointMap] = {}  # result id (collection["wt_result_id"]) → traced map with all samples
message: tuple[str, str] = ("", "")  # (level, text) shown in the panel


def busy() -> bool:
    """Is a worker still running (a trace, or a stopped one finishing its step)?"""
    return job is not None and job.running


def clear(release: bool = False) -> None:
    """Stop the job (its outcome is dropped; the message says so), forget the samples and any older
    message; optionally free the model."""
    global message
    lost = job.abandon() if job is not None else ""
    message = ("WARNING", lost) if lost else ("", "")
    samples.clear()
    if release:
        release_models()
