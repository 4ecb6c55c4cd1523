"""Training-at-scale benchmark: the torch stream's samples/s (CPU, and CUDA when present), what the
trainer consumes, and training throughput with 1 and 2 processes (gloo on CPU).

    python benchmarks/bench_stream.py [--steps 60] [--data data/obj128_val]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.data.stream import SceneStream, StreamConfig


def stream_rate(resolution: int, device: str, batch: int = 8, repeats: int = 3, mode: str = "object") -> float:
    stream = SceneStream(StreamConfig(resolution=resolution, layers=6, device=device, mode=mode), seed=0)
    stream.batch(2)  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        stream.batch(batch)
    if device == "cuda":
        torch.cuda.synchronize()
    return batch * repeats / (time.perf_counter() - t0)


def train_rate(processes: int, steps: int, batch: int, data: str | None) -> float:
    """Samples/s of `python -m core train` (tiny) with `processes` CPU processes, from its own log;
    fed by the shards in `data`, or by the torch stream alone when `data` is None."""
    with tempfile.TemporaryDirectory() as tmp:
        source = ["--data", data] if data else ["--stream-fraction", "1"]
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(processes),
            "--master_port",
            "29561",
            "-m",
            "core",
            "train",
            *source,
            "--out",
            tmp,
            "--steps",
            str(steps),
            "--batch-size",
            str(batch),
            "--warmup",
            "1",
            "--save-every",
            str(10**6),
            "--eval-every",
            str(10**6),
            "--device",
            "cpu",
        ]
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // processes))}
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, env=env)
        rows = [json.loads(line) for line in (Path(tmp) / "log.jsonl").read_text().splitlines()]
    rates = [r["samples_per_s"] for r in rows if "samples_per_s" in r][1:]  # skip the first window (start-up)
    return sum(rates) / len(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--data", default=str(ROOT / "data" / "obj128_val"), help="shards for the trainer measurements")
    args = parser.parse_args()
    for res in (64, 128, 256):
        print(f"stream {res}px, cpu ({torch.get_num_threads()} threads): {stream_rate(res, 'cpu'):.2f} samples/s")
    print(f"stream 128px, cpu, scene mode (rooms, streets): {stream_rate(128, 'cpu', mode='scene'):.2f} samples/s")
    if torch.cuda.is_available():
        for res in (128, 256, 504):
            print(f"stream {res}px, cuda: {stream_rate(res, 'cuda', batch=32):.1f} samples/s")
        print(f"stream 504px, cuda, scene mode: {stream_rate(504, 'cuda', batch=32, mode='scene'):.1f} samples/s")
    stream_fed = train_rate(1, args.steps, 16, None)
    print(f"trainer fed by the stream alone: {stream_fed:.1f} samples/s (tiny, 1 process on {os.cpu_count()} cores)")
    one = train_rate(1, args.steps, 16, args.data)
    two = train_rate(2, args.steps, 8, args.data)
    print(
        f"trainer on shards: 1 process × batch 16: {one:.1f} samples/s; "
        f"2 processes (gloo) × batch 8: {two:.1f} samples/s; "
        f"scaling 1 → 2 processes: ×{two / one:.2f}"
    )


if __name__ == "__main__":
    main()
