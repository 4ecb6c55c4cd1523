"""The PyTorch the extension runs on (preferences → PyTorch): put the chosen one on the path before
torch is first imported, install a GPU build on request, list what PyTorch sees.

The mechanism is plain Python in `torch_source.py`; this module adds what needs Blender: the
preferences, online access, a modal install with progress and Cancel.
"""

from __future__ import annotations

import sys
from pathlib import Path

import bpy

from .. import torch_source
from ..preferences import preferences, user_data_dir

_added: list[Path] = []  # folders this extension put on sys.path (taken off again on unregister)


def prepare_torch(context=None) -> str:
    """Make `import torch` find the source the preferences choose, unless torch is imported already
    (a switch then waits for a restart). Returns where torch comes from; ValueError says why the
    chosen source cannot be used (the trace is not started). A bytecode warm-up still running is
    stopped: racing the import it would slow it down (a first trace right after enabling took 19 s
    beside it, 4.3 s without it), and the modules it compiled so far stay compiled."""
    if torch_source.compiling is not None:
        torch_source.stop_precompile(torch_source.compiling)
    if "torch" in sys.modules:
        return str(Path(sys.modules["torch"].__file__ or "torch").parent)
    folder = chosen_folder(context)
    for old in _added:
        torch_source.deactivate(old)
    _added.clear()
    if folder is None:
        return "bundled"
    torch_source.activate(folder)
    _added.append(folder)
    return str(folder)


def warm_up() -> None:
    """Start compiling the chosen PyTorch's bytecode in the background (on enable; see
    torch_source.precompile). A source that cannot be used is left to the first trace to report."""
    try:
        folder = chosen_folder()
    except (ValueError, KeyError, AttributeError):
        return
    if "torch" not in sys.modules:
        torch_source.compiling = torch_source.precompile(folder)


def forget_paths() -> None:
    """Unregister: stop a bytecode warm-up still running (its files must not keep the extension's
    folders busy while Blender removes them) and take every folder this extension added off sys.path."""
    if torch_source.compiling is not None:
        torch_source.stop_precompile(torch_source.compiling)
    for folder in _added:
        torch_source.deactivate(folder)
    _added.clear()


def chosen_folder(context=None) -> Path | None:
    """The site-packages the preferences choose (None: bundled); ValueError when it cannot be used."""
    prefs = preferences(context)
    environment = bpy.path.abspath(prefs.torch_environment) if prefs.torch_environment else ""
    return torch_source.active_folder(prefs.torch_source, user_data_dir(), environment)


def pending_restart(context=None) -> bool:
    """torch is imported already, from elsewhere than the preferences now choose: a restart applies the choice."""
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    try:
        folder = chosen_folder(context)
    except ValueError:
        return True
    where = Path(torch.__file__ or "").resolve().parent.parent  # the site-packages it came from
    if folder is None:
        return where in [Path(a).resolve() for a in _added] or Path(user_data_dir()).resolve() in where.parents
    return where != Path(folder).resolve()


class WT_OT_install_torch(bpy.types.Operator):
    """Download the PyTorch build for this GPU into the extension's user folder (needs online access)"""

    bl_idname = "world_tracing.install_torch"
    bl_label = "Install GPU Build"

    build: bpy.props.StringProperty(name="Build", default="", description="e.g. cu128; empty: the one for this GPU")
    index_url: bpy.props.StringProperty(name="Index", default="", description="package index; empty: PyTorch's")

    _timer = None

    @classmethod
    def poll(cls, context) -> bool:
        return not torch_source.install_running()

    def invoke(self, context, event):
        return self.execute(context)

    def execute(self, context):
        if not bpy.app.online_access:
            self.report({"ERROR"}, "online access is off: allow it in Preferences → System → Network, then retry")
            return {"CANCELLED"}
        try:
            build = self.build or torch_source.gpu_build(torch_source.detect_gpu())
        except ValueError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        torch_source.installing = torch_source.Install(user_data_dir(), build, self.index_url or None).start()
        if bpy.app.background:  # no event loop: wait here
            torch_source.installing.wait()
            return self._finish(context)
        self._timer = context.window_manager.event_timer_add(0.25, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        job = torch_source.installing
        assert job is not None
        if event.type == "ESC":
            job.cancel()
        if event.type == "TIMER":
            for window in context.window_manager.windows:  # the preferences window shows the progress
                for area in window.screen.areas:
                    area.tag_redraw()
            if job.done.is_set():
                context.window_manager.event_timer_remove(self._timer)
                return self._finish(context)
        return {"PASS_THROUGH"}

    def _finish(self, context):
        job = torch_source.installing
        assert job is not None
        if job.error:
            self.report({"ERROR"}, f"PyTorch {job.build}: {job.error}")
            return {"CANCELLED"}
        preferences(context).torch_source = "download"
        self.report({"INFO"}, f"{job.message}: restart Blender to use it")
        return {"FINISHED"}


class WT_OT_cancel_torch_install(bpy.types.Operator):
    """Stop the download; nothing is left half-installed"""

    bl_idname = "world_tracing.cancel_torch_install"
    bl_label = "Cancel Install"

    @classmethod
    def poll(cls, context) -> bool:
        return torch_source.install_running()

    def execute(self, context):
        if torch_source.installing is not None:
            torch_source.installing.cancel()
        return {"FINISHED"}


class WT_OT_remove_torch_builds(bpy.types.Operator):
    """Delete the GPU builds installed in the extension's user folder and go back to the bundled PyTorch"""

    bl_idname = "world_tracing.remove_torch_builds"
    bl_label = "Remove GPU Builds"

    @classmethod
    def poll(cls, context) -> bool:
        return not torch_source.install_running()

    def execute(self, context):
        preferences(context).torch_source = "bundled"
        forget_paths()
        torch_source.remove_installs(user_data_dir())
        self.report({"INFO"}, "GPU builds removed; the bundled PyTorch is used after a restart")
        return {"FINISHED"}


class WT_OT_check_device(bpy.types.Operator):
    """Load the chosen PyTorch and list the devices it sees (GPU names and memory)"""

    bl_idname = "world_tracing.check_device"
    bl_label = "Check Device"

    def execute(self, context):
        try:
            origin = prepare_torch(context)
            import torch
        except (ValueError, ImportError) as e:
            self.report({"ERROR"}, f"PyTorch cannot be loaded: {e}")
            return {"CANCELLED"}
        found = [f"PyTorch {torch.__version__} from {origin}"]
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                p = torch.cuda.get_device_properties(i)
                found.append(f"cuda:{i} {p.name}, {p.total_memory / 2**30:.0f} GiB")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            found.append("mps: Apple GPU")
        found.append("cpu")
        torch_source.seen_devices[:] = found
        self.report({"INFO"}, "; ".join(found))
        return {"FINISHED"}


CLASSES = (WT_OT_install_torch, WT_OT_cancel_torch_install, WT_OT_remove_torch_builds, WT_OT_check_device)
