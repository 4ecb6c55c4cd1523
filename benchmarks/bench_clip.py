"""Dynamic mode: seconds to trace a clip of 16 frames at 128 px (the target: ≤ 10 s on 2 CPU cores).

    python benchmarks/bench_clip.py [--frames 16] [--size 128] [--steps 20] [--device cpu]

Two figures: the shipped dynamic model (`tiny` with a temporal block after every global block) in
windows of 4 frames sharing 1 (what `trace --mode dynamic` does), and the per-frame floor: the
shipped object model tracing every frame on its own.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.assets import default_checkpoint
from core.clip import trace_clip
from core.inference import pick_device
from core.model.loading import load_model
from core.sampling import SampleConfig


def moving_square(frames: int, size: int) -> np.ndarray:
    """(T, size, size, 4) uint8: a textured square sliding across a transparent frame."""
    rng = np.random.default_rng(0)
    side = size // 2
    texture = rng.integers(40, 255, (side, side, 3), dtype=np.uint8)
    clip = np.zeros((frames, size, size, 4), np.uint8)
    for t in range(frames):
        x = (size - side) * t // max(frames - 1, 1)
        clip[t, size // 4 : size // 4 + side, x : x + side, :3] = texture
        clip[t, size // 4 : size // 4 + side, x : x + side, 3] = 255
    return clip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = pick_device(args.device)
    clip = moving_square(args.frames, args.size)
    runs = []
    for name, mode in (
        ("shipped dynamic model, windows of 4", "dynamic"),
        ("shipped object model, frame by frame", "object"),
    ):
        model, normalization, card = load_model(default_checkpoint(mode), device)
        runs.append((name, model, normalization, card.sample_config(steps=args.steps)))
    for name, net, norm, cfg in runs:
        trace_clip(net, norm, clip[:2], SampleConfig(steps=1))  # warm-up
        t0 = time.perf_counter()
        traced = trace_clip(net, norm, clip, cfg)
        seconds = time.perf_counter() - t0
        print(
            f"{name}: {args.frames} frames at {args.size} px, {args.steps} steps: {seconds:.2f} s "
            f"({seconds / args.frames:.2f} s per frame, {int(traced.valid.sum())} points) on {device}"
        )


if __name__ == "__main__":
    main()
