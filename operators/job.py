"""One trace at a time, in a worker thread that never touches Blender data.

The worker runs core code only (read the image, load the model, sample) and reports through a
queue: progress after every sampler step, then the result or an error. On the main thread a
`bpy.app.timers` callback drains the queue, updates the panel and hands the result to the scene
builder. Cancel sets an event the sampler checks after every step. In background mode (no event
loop, timers never fire) `TraceJob.run_blocking` runs the same work on the calling thread.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class TraceRequest:
    """Everything the worker needs, as plain Python values (read from Blender on the main thread)."""

    checkpoint: str  # our .safetensors or an official checkpoint
    device: str  # "auto", "cuda", "mps" or "cpu"
    mode: str  # "object" or "scene"
    steps: int
    seed: int
    samples: int
    edge_filter: float  # strength of the edge filter (0: off)
    far_limit: float  # drop points beyond this × the median visible depth (0: off)
    geometry_size: int = 0  # longer side of the result: larger images are traced scaled down (0: their own)
    image_path: str = ""  # read from disk in the worker ...
    pixels: np.ndarray | None = None  # ... or RGBA uint8 (H, W, 4) taken from a Blender image
    label: str = "the image"  # how messages name the input
    mask: np.ndarray | None = None  # object mode: RGBA uint8 (H, W, 4) of a mask image (`with_mask`)
    clip_path: str = ""  # dynamic mode: a folder of frames, an animated image or a video (`core.clip`)


@dataclass
class Progress:
    step: int = 0
    total: int = 0
    started: float = field(default_factory=time.monotonic)
    stage: str = "starting"
    label: str = ""  # what the steps are working on, when there is more than one image (a clip's frames)

    @property
    def fraction(self) -> float:
        return self.step / self.total if self.total else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left, from the average step time so far."""
        if self.step == 0:
            return None
        return (time.monotonic() - self.started) / self.step * (self.total - self.step)


class Cancelled(Exception):
    """The user cancelled the trace."""


# The loaded model is kept between traces until released. The key holds the file's identity (inode,
# size, modification time), so a checkpoint replaced under the same name is loaded afresh.
_model_cache: dict[tuple, tuple] = {}
_model_lock = threading.Lock()


def file_identity(path: str) -> tuple[int, int, int]:
    """(inode, size, mtime in ns) of a file; FileNotFoundError names it when it is gone."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint not found: {path}") from None
    return st.st_ino, st.st_size, st.st_mtime_ns


def load_model_cached(checkpoint: str, device_name: str) -> tuple:
    """(model, normalisation, card) for a checkpoint, loaded once per (file version, device). The panel's
    timed card is left to Check Model: counting FLOPs imports torch's compiler (seconds a trace should not
    wait for) and hooks every module globally (it cannot run beside a trace)."""
    from ..core.inference import pick_device
    from ..core.model.loading import load_model

    device = pick_device(device_name)
    identity = file_identity(checkpoint)
    key = (checkpoint, identity, str(device))
    with _model_lock:
        if key not in _model_cache:
            _model_cache.clear()  # one model in memory at a time
            _model_cache[key] = load_model(checkpoint, device)
        return _model_cache[key]


def release_models() -> None:
    """Forget the cached model and give its memory (and GPU memory) back."""
    with _model_lock:
        had_model = bool(_model_cache)
        _model_cache.clear()
    if had_model:
        import gc

        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return_freed_memory()


def return_freed_memory() -> None:
    """Hand the C heap's freed pages back to the system (glibc keeps them otherwise, so the process's
    resident size would not drop after the model and its buffers are freed); elsewhere a no-op."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if sys.platform.startswith("linux") and name:
        try:
            ctypes.CDLL(name).malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
            pass


_cards: dict[str, tuple[tuple, dict]] = {}  # path → (file identity, the panel's card of that file)


def model_card(checkpoint: str) -> dict | None:
    """What is known about a checkpoint (name, mode, resolution, time per step), if this version of
    the file was checked or loaded already."""
    known = _cards.get(checkpoint)
    try:
        return known[1] if known and known[0] == file_identity(checkpoint) else None
    except FileNotFoundError:
        return None


def timed_card(card, device: str) -> dict:
    """The panel's card: a ModelCard's facts plus the device and one sampler step's estimated time
    there (from its FLOPs and a measured matmul rate)."""
    from ..core.model.cost import estimate_seconds

    return {
        "name": card.name,
        "mode": card.mode,
        "image_size": card.image_size,
        "layers": card.layers,
        "parameters": card.parameters,
        "device": device,
        "seconds_per_step": estimate_seconds(card.forward_flops, 1, device),
    }


def check_model(checkpoint: str, device_name: str) -> dict:
    """The panel's card of a checkpoint from its tensor shapes (no weights loaded)."""
    from ..core.inference import pick_device
    from ..core.model.loading import describe_model

    identity = file_identity(checkpoint)
    card = timed_card(describe_model(checkpoint), str(pick_device(device_name)))
    _cards[checkpoint] = (identity, card)
    return card


def run_trace(request: TraceRequest, progress: Progress, cancel: threading.Event):
    """The work itself (any thread): returns a LayeredPointMap (a LayeredClip for a clip); raises
    Cancelled or a clear error."""
    if request.clip_path:
        return run_clip(request, progress, cancel)
    from ..core.imageio import downsized, read_image, with_mask
    from ..core.inference import TraceCancelled, trace_image

    progress.stage = "reading image"
    rgba = request.pixels if request.pixels is not None else read_image(request.image_path)
    if request.mask is not None:
        rgba = with_mask(rgba, request.mask)
    if request.geometry_size:
        rgba = downsized(rgba, request.geometry_size)
    progress.stage = "loading model"
    model, normalization, card = load_model_cached(request.checkpoint, request.device)
    if cancel.is_set():
        raise Cancelled()
    cfg = card.sample_config(steps=request.steps)
    progress.total, progress.started, progress.stage = cfg.steps, time.monotonic(), "sampling"

    def on_step(step) -> None:
        progress.step = step.step
        if cancel.is_set():
            raise TraceCancelled()

    try:
        framing = card.scene_framing if request.mode == "scene" else None
        return trace_image(
            model,
            normalization,
            rgba,
            request.mode,
            cfg,
            request.seed,
            request.samples,
            on_step,
            framing,
            request.edge_filter,
            request.far_limit,
        )
    except TraceCancelled:
        raise Cancelled() from None


def run_clip(request: TraceRequest, progress: Progress, cancel: threading.Event):
    """A clip's frames traced into a LayeredClip; progress counts the steps of every window or frame."""
    from ..core.clip import WINDOW, read_clip, trace_clip, window_starts
    from ..core.imageio import downsized
    from ..core.inference import TraceCancelled

    progress.stage = "reading frames"
    frames = read_clip(request.clip_path)
    if request.geometry_size:
        frames = np.stack([downsized(f, request.geometry_size) for f in frames])
    progress.stage = "loading model"
    model, normalization, card = load_model_cached(request.checkpoint, request.device)
    if cancel.is_set():
        raise Cancelled()
    cfg = card.sample_config(steps=request.steps)
    T = len(frames)
    runs = len(window_starts(T)) if model.cfg.temporal else T
    progress.total, progress.started, progress.stage = runs * cfg.steps, time.monotonic(), "sampling"
    done = [0]

    def on_step(frame: int, step) -> None:
        done[0] += 1
        progress.step = done[0]
        last = min(frame + WINDOW, T) if model.cfg.temporal else frame + 1
        progress.label = f"frame {frame + 1} of {T}" if last == frame + 1 else f"frames {frame + 1}–{last} of {T}"
        if cancel.is_set():
            raise TraceCancelled()

    try:
        return trace_clip(
            model, normalization, frames, cfg, request.seed, on_step, card.scene_framing, request.edge_filter
        )
    except TraceCancelled:
        raise Cancelled() from None


class TraceJob:
    """A trace running (or finished) in a worker thread; `poll` is called on the main thread."""

    def __init__(
        self, request: TraceRequest, on_done: Callable, on_error: Callable[[str], None], on_cancel: Callable[[], None]
    ):
        self.request = request
        self.progress = Progress()
        self.cancel_event = threading.Event()
        self._results: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._callbacks = (on_done, on_error, on_cancel)
        self.abandoned = False

    def _work(self) -> None:
        try:
            self._results.put(("done", run_trace(self.request, self.progress, self.cancel_event)))
        except Cancelled:
            self._results.put(("cancelled", None))
        except (ValueError, FileNotFoundError, MemoryError) as e:  # ImageError, CheckpointError, ...
            self._results.put(("error", str(e)))
        except Exception as e:  # unexpected: keep the traceback for the console
            traceback.print_exc()
            self._results.put(("error", f"{type(e).__name__}: {e}"))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="world-tracing", daemon=True)
        self._thread.start()

    def run_blocking(self) -> None:
        """Do the work on this thread, then deliver the outcome (background mode)."""
        self._work()
        self.poll()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def cancel(self, wait: float = 0.0) -> None:
        """Ask the worker to stop after its current step; optionally wait up to `wait` seconds."""
        self.cancel_event.set()
        if wait and self._thread is not None:
            self._thread.join(wait)

    def abandon(self) -> str:
        """Stop for good (file closed, extension disabled): the worker stops after its current step and
        its outcome is never delivered. Returns what was lost, for a message ("" if nothing)."""
        self.cancel_event.set()
        self.abandoned = True
        if self.running:
            return f"the trace of {self.request.label} was stopped: its file was closed"
        if not self._results.empty() and self._results.queue[0][0] == "done":
            return f"a finished trace of {self.request.label} was discarded: its file was closed before it was built"
        return ""

    def poll(self) -> bool:
        """Deliver a finished outcome through the callbacks (an abandoned job's is dropped); True once
        the job is over."""
        if self.abandoned:
            return not self.running
        try:
            kind, value = self._results.get_nowait()
        except queue.Empty:
            return False
        on_done, on_error, on_cancel = self._callbacks
        if kind == "done":
            on_done(value)
        elif kind == "error":
            on_error(value)
        else:
            on_cancel()
        return True
