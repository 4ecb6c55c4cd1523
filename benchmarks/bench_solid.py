"""Solid mesh benchmark: `python -m core solid`'s mesh of a synthetic 512×512, 6-layer result.

    python benchmarks/bench_solid.py

The result is traced analytically: three spheres and two boxes (the far one a wall behind everything, so
layer 0 covers the frame), apart from each other and staggered in depth so that some rays pass through
three of them (6 layers). Prints the build time of `solid_mesh`
(occupancy, marching cubes, layer of each vertex) and the size of the mesh.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.geometry.solid import solid_mesh

SIZE, LAYERS = 512, 6
SPHERES = [((-0.5, -0.3, 2.6), 0.55), ((0.35, 0.1, 3.8), 0.8), ((-0.1, 0.5, 5.6), 1.1)]  # (centre, radius)
BOXES = [((0.3, -0.9, 2.0), (1.0, -0.2, 2.4)), ((-2.5, -2.5, 7.0), (2.5, 2.5, 7.6))]  # (low corner, high corner)


def sphere_depths(rays: np.ndarray, centre: tuple[float, float, float], radius: float) -> np.ndarray:
    """(2, H, W) depths z where rays (H, W, 3) (scaled to z = 1) enter and leave the sphere; inf on a miss."""
    c = np.asarray(centre)
    a, b, k = (rays * rays).sum(-1), -2 * rays @ c, c @ c - radius**2
    disc = b * b - 4 * a * k
    root = np.sqrt(np.maximum(disc, 0))
    return np.where(disc > 0, np.stack([(-b - root) / (2 * a), (-b + root) / (2 * a)]), np.inf)


def box_depths(rays: np.ndarray, low: tuple[float, float, float], high: tuple[float, float, float]) -> np.ndarray:
    """(2, H, W) depths z where rays (H, W, 3) enter and leave an axis-aligned box (slab test); inf on a miss."""
    with np.errstate(divide="ignore"):
        t1, t2 = np.asarray(low) / rays, np.asarray(high) / rays  # (H, W, 3)
    near, far = np.minimum(t1, t2).max(-1), np.maximum(t1, t2).min(-1)
    return np.where(near < far, np.stack([near, far]), np.inf)


def synthetic_result() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """points (L, H, W, 3) float32, valid (L, H, W) bool, intrinsics (3, 3) of the scene above."""
    f = 1.1 * SIZE
    K = np.array([[f, 0, SIZE / 2], [0, f, SIZE / 2], [0, 0, 1]], dtype=np.float32)
    v, u = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    rays = np.stack([(u - SIZE / 2) / f, (v - SIZE / 2) / f, np.ones((SIZE, SIZE))], axis=-1)
    crossings = [sphere_depths(rays, c, r) for c, r in SPHERES] + [box_depths(rays, lo, hi) for lo, hi in BOXES]
    z = np.sort(np.concatenate(crossings), axis=0)[:LAYERS]  # disjoint solids: entries and exits alternate
    valid = np.isfinite(z)
    points = np.where(valid[..., None], np.where(valid, z, 0)[..., None] * rays, 0).astype(np.float32)
    return points, valid, K


def main() -> None:
    points, valid, K = synthetic_result()
    print(f"result: {SIZE}×{SIZE}, {LAYERS} layers, {int(valid.sum()):,} valid points, per layer {valid.sum((1, 2))}")
    solid_mesh(points, valid, K)  # imports and first-call costs
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        vertices, faces, _ = solid_mesh(points, valid, K)
        times.append(time.perf_counter() - t0)
    print(f"solid mesh: {min(times):.2f} s (best of 3), {len(faces):,} faces, {len(vertices):,} vertices")


if __name__ == "__main__":
    main()
