"""Data-engine benchmark: multi-hit tracer rays/s and generator samples/s at 64, 128 and 256 px.

python benchmarks/bench_data.py [--count 32] [--workers 2]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.data.generate import GenerateConfig, generate


def tracer_rays_per_second(resolution: int, seed: int = 0, layers: int = 6) -> tuple[float, float]:
    """(rays/s, casts/s) of `trace_layers` on a random object scene, in this process's Blender."""
    import torch

    from core.data.recipe import object_camera
    from core.data.scenes import add_camera, build_object_scene, reset_scene
    from core.data.tracing import camera_model, scene_triangles, trace_layers
    from core.geometry.points import pixel_rays

    rng = np.random.default_rng(seed)
    reset_scene(resolution, 1, 1, True)
    build_object_scene(rng, [], [])
    add_camera(*object_camera(rng))
    import bpy

    K, c2w = camera_model(bpy.context.scene.camera, resolution, resolution)
    v, t = scene_triangles([])
    rays = pixel_rays(torch.from_numpy(K).double(), resolution, resolution).numpy().reshape(-1, 3)
    dirs = (rays / np.linalg.norm(rays, axis=1, keepdims=True)) @ c2w[:3, :3].T.astype(np.float64)
    t0 = time.perf_counter()
    distance, _ = trace_layers(v, t, c2w[:3, 3].astype(np.float64), dirs, layers)
    dt = time.perf_counter() - t0
    casts = len(dirs) + int((distance > 0).sum())  # one cast per hit, plus the miss that ends each ray
    return len(dirs) / dt, casts / dt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=32, help="samples per resolution for the generator")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    for res in (64, 128, 256):
        rays = [tracer_rays_per_second(res, seed) for seed in range(3)]
        print(
            f"tracer {res}px: {np.mean([r for r, _ in rays]) / 1e3:.0f}k rays/s, "
            f"{np.mean([c for _, c in rays]) / 1e3:.0f}k casts/s"
        )
    for res in (64, 128, 256):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = GenerateConfig(
                out=tmp,
                count=args.count,
                seed=123,
                resolution=res,
                workers=args.workers,
                shard_size=math.ceil(args.count / args.workers),
            )
            t0 = time.perf_counter()
            generate(cfg, progress=False)
            dt = time.perf_counter() - t0
        print(
            f"generator {res}px, {args.workers} workers: {args.count / dt:.2f} samples/s ({dt:.1f} s for {args.count}, "
            f"Blender start-up included)"
        )


if __name__ == "__main__":
    main()
