"""First click in a user's Blender: enabling, the first and the second trace, a phone photo with the
panel's defaults, and memory after Release.

    .venv-blender/5.0.1/bin/python -I benchmarks/bench_first_click.py dist/cp311/world_tracing-*.zip [--wait-warm-up]

Runs in a Python that holds only the bpy module (`make extension` makes it and the zip), the way an
artist's Blender does: installs the zip into a temporary user folder, then prints the seconds to enable
the extension (and whether torch got imported by it), from `trace_image` to geometry for the first trace
of a 128 px image (torch import and model load included) and for the second, the same for a 4000×3000
photo with the panel's default settings beside the model's own sampling time, and the process's
resident memory before the first trace, after the traces, and after *Release Model* and disabling.
Enabling starts compiling torch's bytecode in a background process; with --wait-warm-up the first trace
waits until that has finished (an artist who clicks a few seconds after enabling), else it starts at once
and stops the warm-up (what it compiled so far stays).
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

MODULE = "bl_ext.user_default.world_tracing"


def rss_mb() -> float:
    """Resident memory of this process now, in MB (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def model_seconds() -> float:
    """The shipped model's own 20-step sampling of one image, as the extension runs it (best of 3)."""
    import bpy
    import torch

    job, inference, request = (
        sys.modules[f"{MODULE}.{name}"] for name in ("operators.job", "core.inference", "operators.request")
    )
    model, normalization, card = job.load_model_cached(request.selected_checkpoint(bpy.context), "cpu")
    size = card.image_size
    image, foreground = torch.rand(1, 3, size, size), torch.ones(1, size, size, dtype=torch.bool)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        inference.predict(model, normalization, image, foreground, card.sample_config(steps=20))
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    package = Path(sys.argv[1]).resolve()
    folder = Path(tempfile.mkdtemp(prefix="wt-first-click-"))  # the installed extension: ~1 GB
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    os.environ["BLENDER_USER_RESOURCES"] = str(folder / "user")
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.extensions.package_install_files(filepath=str(package), repo="user_default", enable_on_install=False)
    t0 = time.perf_counter()
    bpy.ops.preferences.addon_enable(module=MODULE)
    enabled = time.perf_counter()
    print(f"enable: {enabled - t0:.2f} s (torch imported: {'torch' in sys.modules})")
    compiling = sys.modules[f"{MODULE}.torch_source"].compiling
    print(f"bytecode warm-up started: {compiling is not None}")
    if compiling is not None and "--wait-warm-up" in sys.argv:
        compiling.wait()
        print(f"bytecode warm-up finished {time.perf_counter() - enabled:.1f} s after enabling")
    from PIL import Image  # from the extension's wheels

    sample = Path(sys.modules[MODULE].__file__).parent / "core" / "assets" / "sample.png"
    small = folder / "sample128.png"
    Image.open(sample).resize((128, 128)).save(small)
    print(f"memory before the first trace: {rss_mb():.0f} MB")
    for which in ("first", "second"):
        t0 = time.perf_counter()
        assert bpy.ops.world_tracing.trace_image(filepath=str(small)) == {"FINISHED"}
        print(f"{which} trace of a 128 px image, click to geometry: {time.perf_counter() - t0:.2f} s")
    photo = folder / "photo.png"
    Image.open(sample).convert("RGB").resize((4000, 3000)).save(photo)
    t0 = time.perf_counter()
    assert bpy.ops.world_tracing.trace_image(filepath=str(photo)) == {"FINISHED"}
    seconds = time.perf_counter() - t0
    model = model_seconds()
    print(f"4000×3000 photo, panel defaults, click to geometry: {seconds:.2f} s (model alone: {model:.2f} s)")
    print(f"memory after the traces: {rss_mb():.0f} MB")
    bpy.ops.world_tracing.release()
    print(f"memory after Release Model: {rss_mb():.0f} MB")
    bpy.ops.preferences.addon_disable(module=MODULE)
    print(f"memory after disabling the extension: {rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
