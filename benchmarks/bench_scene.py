"""Blender-side benchmark: building a traced result (512×512, 6 layers; points, meshes, the solid) and
the extension zip.

    python benchmarks/bench_scene.py

Installs the built extension (dist/) into a temporary Blender user folder and times its scene builder
on a synthetic layered map whose layers cover 100/60/60/25/25/10 % of the pixels.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
os.environ["BLENDER_USER_RESOURCES"] = tempfile.mkdtemp(prefix="wt-bench-")  # the installed extension: ~1 GB
atexit.register(shutil.rmtree, os.environ["BLENDER_USER_RESOURCES"], ignore_errors=True)
sys.path.insert(0, str(ROOT))


def synthetic_result(size: int = 512, layers: int = 6):
    from core.layered import LayeredPointMap

    rng = np.random.default_rng(0)
    cover = [1.0, 0.6, 0.6, 0.25, 0.25, 0.1]
    v, u = np.mgrid[0:size, 0:size] + 0.5
    f = size * 0.9
    radius = np.hypot(u - size / 2, v - size / 2) / (size / 2)
    valid = np.stack([radius < 1.42 * np.sqrt(c) for c in cover[:layers]])
    z = 2.0 + np.arange(layers)[:, None, None] * 0.2 + 0.05 * rng.random((layers, size, size))
    points = np.stack([(u - size / 2) / f * z, (v - size / 2) / f * z, z], -1) * valid[..., None]
    K = np.array([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]])
    return LayeredPointMap(points, valid, K, rng.integers(0, 255, (size, size, 3), dtype=np.uint8))


def main() -> None:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "wheels" / "build.py")], check=True, capture_output=True)
    print(f"extension build + validate (wheels cached): {time.perf_counter() - t0:.1f} s")
    import bpy

    zips = sorted((ROOT / "dist").glob("cp*/world_tracing-*.zip"), key=lambda p: p.stat().st_mtime)
    t0 = time.perf_counter()
    bpy.ops.extensions.package_install_files(
        filepath=str(zips[-1]), repo="user_default", enable_on_install=True, overwrite=True
    )
    print(f"install + enable from the zip: {time.perf_counter() - t0:.1f} s")
    scene_mod = sys.modules["bl_ext.user_default.world_tracing.operators.scene"]
    lpm = synthetic_result()
    print(f"result: 512×512, 6 layers, {int(lpm.valid.sum()):,} valid points")
    for output, solid in (("POINTS", False), ("MESHES", False), ("BOTH", False), ("POINTS", True)):
        times, faces = [], 0
        for _ in range(3):
            t0 = time.perf_counter()
            options = scene_mod.BuildOptions(output=output, solid=solid)
            result = scene_mod.build_result(bpy.context.scene, lpm, "WT bench", options)
            times.append(time.perf_counter() - t0)
            faces = sum(len(o.data.polygons) for o in result.objects if o.get("wt_solid"))
            scene_mod.remove_result(result)
        label = output.lower() + (f" + solid ({faces:,} faces)" if solid else "")
        print(f"scene build, {label}: {min(times):.2f} s (best of 3)")


if __name__ == "__main__":
    main()
