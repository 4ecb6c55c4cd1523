"""Run inside a Python that is a user's Blender: only the bpy module and what it depends on.

    .venv-blender/5.0.1/bin/python tests/user_blender.py ZIP --out FOLDER

Installs the extension zip through Blender's own installer (Blender installs the bundled wheels),
enables it, imports every module it ships, traces the bundled sample twice with
`bpy.ops.world_tracing.trace_image` (points, then points, meshes and the solid), renders one frame
through the matched camera (Cycles, CPU), disables and re-enables it and traces once more. Prints
one JSON line of figures and checks; exits non-zero at the first failure. Nothing here may import
torch, PIL or the repository's code: whatever the extension needs must come from its zip.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import pkgutil
import sys
import tempfile
import time
from pathlib import Path

MODULE = "bl_ext.user_default.world_tracing"


def fail(message: str) -> None:
    print(json.dumps({"error": message}))
    sys.exit(1)


def import_everything(module) -> list[str]:
    """Import every module inside the installed extension; returns their names."""
    names = [m.name for m in pkgutil.walk_packages(module.__path__, MODULE + ".")]
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as e:  # a module the zip ships but cannot import with what the user has
            fail(f"importing {name} failed: {type(e).__name__}: {e}")
    return names


def trace(bpy, image: Path, seed: int) -> float:
    """Seconds for one blocking trace of `image` (background mode), checked to have built points."""
    t0 = time.perf_counter()
    result = bpy.ops.world_tracing.trace_image(filepath=str(image), seed=seed)
    seconds = time.perf_counter() - t0
    collection = bpy.context.scene.world_tracing.result
    if result != {"FINISHED"} or collection is None:
        fail(f"trace_image returned {result}")
    points = sum(len(o.data.vertices) for o in collection.objects if o.type == "MESH")
    if points < 1000:
        fail(f"the traced result has only {points} points")
    return seconds


def alpha_of(bpy, path: Path) -> list[bool]:
    """Per-pixel alpha > 0.5 of an image file, read through Blender."""
    image = bpy.data.images.load(str(path))
    pixels = list(image.pixels)
    bpy.data.images.remove(image)
    return [a > 0.5 for a in pixels[3::4]]


def render_matched_view(bpy, out: Path, sample: Path) -> float:
    """Render through the matched camera with a transparent film; IoU of its alpha with the sample's."""
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device, scene.cycles.samples = "CPU", 4
    scene.render.film_transparent = True
    scene.render.filepath = str(out / "matched_view.png")
    bpy.ops.render.render(write_still=True)
    rendered, source = alpha_of(bpy, out / "matched_view.png"), alpha_of(bpy, sample)
    if len(rendered) != len(source):
        fail(f"the render has {len(rendered)} pixels, the image {len(source)}")
    both = sum(r and s for r, s in zip(rendered, source, strict=False))
    either = sum(r or s for r, s in zip(rendered, source, strict=False))
    return both / max(either, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("zip", type=Path)
    parser.add_argument("--out", type=Path, help="render and Blender user folder (default: a new temporary one)")
    args = parser.parse_args()
    args.out = args.out or Path(tempfile.mkdtemp(prefix="wt-user-"))
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("BLENDER_USER_RESOURCES", str(args.out / "blender-user"))
    for name in ("torch", "PIL", "scipy", "einops", "safetensors"):
        if importlib.util.find_spec(name) is not None:
            fail(f"{name} is importable before the extension is installed: this is not a user's Blender")

    t0 = time.perf_counter()
    import bpy

    figures = {"blender": bpy.app.version_string, "import_bpy_s": time.perf_counter() - t0}
    bpy.ops.wm.read_factory_settings(use_empty=True)
    t0 = time.perf_counter()
    result = bpy.ops.extensions.package_install_files(
        filepath=str(args.zip), repo="user_default", enable_on_install=True, overwrite=True
    )
    figures["install_enable_s"] = time.perf_counter() - t0
    if result != {"FINISHED"} or MODULE not in sys.modules or not hasattr(bpy.ops.world_tracing, "trace_image"):
        fail(f"installing {args.zip.name} did not enable the extension ({result})")
    module = sys.modules[MODULE]
    figures["torch_loaded_on_enable"] = "torch" in sys.modules
    figures["modules"] = len(import_everything(module))

    sample = Path(module.__file__).parent / "core" / "assets" / "sample.png"
    warm_up = sys.modules[f"{MODULE}.torch_source"].compiling
    figures["first_trace_s"] = trace(bpy, sample, seed=0)
    figures["warm_up_running_after_first_trace"] = warm_up is not None and warm_up.poll() is None
    settings = bpy.context.scene.world_tracing
    settings.output, settings.solid = "BOTH", True
    figures["second_trace_s"] = trace(bpy, sample, seed=1)  # with meshes and the solid this time
    faces = {o.name.split(" ", 2)[-1]: len(o.data.polygons) for o in settings.result.objects if o.type == "MESH"}
    if not (faces.get("solid", 0) > 1000 and faces.get("mesh L0", 0) > 1000):
        fail(f"the second trace should have built meshes and a solid, got faces {faces}")
    figures["solid_faces"] = faces["solid"]
    settings.output, settings.solid = "POINTS", False
    figures["render_alpha_iou"] = render_matched_view(bpy, args.out, sample)

    bpy.ops.preferences.addon_disable(module=MODULE)
    if hasattr(bpy.types.Scene, "world_tracing") or hasattr(bpy.types, "WORLD_TRACING_OT_trace_image"):
        fail("disabling left the extension's settings or operators registered")
    t0 = time.perf_counter()
    bpy.ops.preferences.addon_enable(module=MODULE)
    figures["re_enable_s"] = time.perf_counter() - t0
    figures["trace_after_re_enable_s"] = trace(bpy, sample, seed=2)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
