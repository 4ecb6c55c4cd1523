"""The main job (`make demo`): the bundled sample image and the shipped model, traced in Blender.

Runs in a user's Blender: a Python holding only the bpy module (`make demo` makes
.venv-blender/<version>/). Installs the freshly built extension zip into an isolated Blender user
folder (Blender installs its bundled wheels), traces the sample image inside it with
`bpy.ops.world_tracing.trace_image`, saves out/world_tracing_demo.blend and renders the image's own
view plus three novel views (Cycles, CPU) into out/, with out/demo.png putting them side by side.
Pillow comes from the extension's own wheels, so nothing is imported from the repository.

    python scripts/demo.py [--image PATH] [--mode object|scene] [--checkpoint PATH] [--steps N] [--device D]
                           [--solid] [--edges] [--no-render]

traces another image or model the same way (e.g. an official model.pt, picked as in the preferences);
--solid also builds the result's solid and renders it alone the same way into out/demo_solid.png;
--edges traces the image again without the edge filter and renders the visible layer of each trace
from one novel view into out/demo_edges.png (input, without the filter, with it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "out"
os.environ["BLENDER_USER_RESOURCES"] = str(OUT / "blender-user")  # never touch the user's own Blender set-up
MODULE = "bl_ext.user_default.world_tracing"
NOVEL_FRAMES = (1, 24, 48)


def install_extension() -> Path:
    """Install and enable the newest zip in dist/; returns it."""
    import bpy

    zips = sorted((ROOT / "dist").glob("cp*/world_tracing-*.zip"), key=lambda p: p.stat().st_mtime)
    if not zips:
        raise SystemExit("no extension zip in dist/: run `python wheels/build.py` (make demo does)")
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.extensions.package_install_files(
        filepath=str(zips[-1]), repo="user_default", enable_on_install=True, overwrite=True
    )
    return zips[-1]


def render(scene, camera, path: Path, frame: int = 1):
    """Render a frame through `camera` to `path`; returns it as (H, W, 3) uint8."""
    import bpy
    import numpy as np
    from PIL import Image

    scene.camera = camera
    scene.frame_set(frame)
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    return np.asarray(Image.open(path).convert("RGB"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", type=Path, help="default: the sample image inside the extension")
    parser.add_argument("--checkpoint", default="", help="model file (default: the shipped model)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="auto", choices=["auto", "cuda", "mps", "cpu"])
    parser.add_argument("--mode", default="object", choices=["object", "scene"])
    parser.add_argument("--solid", action="store_true", help="also build the solid and render it (demo_solid.png)")
    parser.add_argument("--edges", action="store_true", help="also trace without the edge filter (demo_edges.png)")
    parser.add_argument("--no-render", action="store_true", help="only trace and save the .blend")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    import bpy

    package = install_extension()
    print(f"installed {package.name}")
    import numpy as np
    from PIL import Image  # from the extension's bundled wheels

    args.image = args.image or Path(sys.modules[MODULE].__file__).parent / "core" / "assets" / "sample.png"
    prefs = bpy.context.preferences.addons[MODULE].preferences
    prefs.checkpoint, prefs.device = str(Path(args.checkpoint).resolve()) if args.checkpoint else "", args.device
    scene = bpy.context.scene
    settings = scene.world_tracing
    settings.output, settings.point_size, settings.steps = "POINTS", 1.6, args.steps
    settings.solid, settings.solid_hidden, settings.mode = args.solid, "NEAREST", args.mode
    t0 = time.perf_counter()
    result = bpy.ops.world_tracing.trace_image(filepath=str(args.image))
    if result != {"FINISHED"}:
        raise SystemExit(f"tracing {args.image} failed")
    print(
        f"traced {args.image.name} with {settings.result.get('wt_model', 'the model')} "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    collection = settings.result
    matched = next(o for o in collection.objects if o.type == "CAMERA" and o.parent is None)
    novel = next(o for o in collection.objects if o.type == "CAMERA" and o.parent is not None)

    scene.render.engine = "CYCLES"
    scene.cycles.device, scene.cycles.samples = "CPU", 16
    scene.view_settings.view_transform = "Standard"  # emission shows the image's own colours
    scene.render.resolution_percentage = 100
    scene.world = bpy.data.worlds.new("demo world")
    scene.world.color = (0.03, 0.03, 0.035)
    blend = OUT / "world_tracing_demo.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    print(f"saved {blend}")
    if args.no_render:
        return

    source = np.asarray(Image.open(args.image).convert("RGB"))
    solid = [o for o in collection.objects if o.get("wt_solid")]
    for obj in solid:
        obj.hide_render = True
    views = [(matched, 1, "render_image_view.png")] + [(novel, f, f"render_novel_{f:02d}.png") for f in NOVEL_FRAMES]
    side_by_side([source] + [render(scene, cam, OUT / name, frame) for cam, frame, name in views], OUT / "demo.png")
    print(f"renders: {OUT}/render_*.png; side by side: {OUT / 'demo.png'}")
    if solid:
        for obj in collection.objects:
            obj.hide_render = obj.type == "MESH" and not obj.get("wt_solid")
        tiles = [render(scene, cam, OUT / f"solid_{name}", frame) for cam, frame, name in views]
        side_by_side([source] + tiles, OUT / "demo_solid.png")
        print(f"solid: {len(solid[0].data.polygons):,} faces; side by side: {OUT / 'demo_solid.png'}")
    if args.edges:
        settings.solid, filter_strength, settings.edge_filter = False, settings.edge_filter, 0.0
        if bpy.ops.world_tracing.trace_image(filepath=str(args.image)) != {"FINISHED"}:
            raise SystemExit(f"tracing {args.image} without the edge filter failed")
        tiles = []
        for shown in (settings.result, collection):  # without the filter, then with it
            for c in (settings.result, collection):
                c.hide_render = c is not shown
            for obj in shown.objects:  # the visible layer alone: flying pixels float in front of the others
                obj.hide_render = obj.type == "MESH" and not obj.name.endswith(" L0")
            novel = next(o for o in shown.objects if o.type == "CAMERA" and o.parent is not None)
            tiles.append(render(scene, novel, OUT / f"edges_{len(tiles)}.png", NOVEL_FRAMES[0]))
        side_by_side([source] + tiles, OUT / "demo_edges.png")
        print(f"edge filter {filter_strength:g} against none, one novel view: {OUT / 'demo_edges.png'}")


def side_by_side(tiles: list, path: Path) -> None:
    """Images (H_i, W_i, 3) uint8 scaled to the smallest height and written next to each other."""
    import numpy as np
    from PIL import Image

    h = min(t.shape[0] for t in tiles)
    strip = np.concatenate(
        [np.asarray(Image.fromarray(t).resize((round(t.shape[1] * h / t.shape[0]), h))) for t in tiles], axis=1
    )
    Image.fromarray(strip).save(path)


if __name__ == "__main__":
    main()
