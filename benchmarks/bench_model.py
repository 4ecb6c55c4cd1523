"""Model benchmark: inference time and memory, training throughput, FLOP utilisation, attention split.

    python benchmarks/bench_model.py [--checkpoint core/assets/wt-tiny.safetensors] [--device cpu]

Prints one figure per line. The FLOP/s peak is this machine's measured matmul rate in the precision the
model runs in (bf16 where the device computes it natively, else float32), so "utilisation" is relative
to what the hardware actually does on a large GEMM.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from timing import sampling_seconds, sync

from core.assets import default_checkpoint
from core.inference import pick_device
from core.model.cost import count_flops, forward_inputs
from core.model.loading import load_model
from core.model.wtdit import BLOCK_TYPES, WTDiT
from core.precision import bf16_autocast, native_bf16
from core.train.flow import flow_loss


def matmul_peak(device: torch.device, n: int = 2048, repeats: int = 10) -> float:
    """Measured FLOP/s of an n×n matmul in the precision the model runs in (`core/precision.py`)."""
    dtype = torch.bfloat16 if native_bf16(device) else torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - t0)


def peak_memory_of_trace(checkpoint: str, device: str) -> float:
    """Peak resident memory (MB) of a fresh process that loads the model and traces the sample image."""
    code = (
        f"import resource, sys; sys.path.insert(0, {str(ROOT)!r})\n"
        "from core.assets import SAMPLE_IMAGE\nfrom core.model.loading import load_model\n"
        "from core.imageio import read_image\n"
        "from core.inference import trace_image, pick_device\n"
        f"m, n, _ = load_model({checkpoint!r}, pick_device({device!r})); trace_image(m, n, read_image(SAMPLE_IMAGE))\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    return float(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()[-1]
    )


def training_throughput(model: WTDiT, device: torch.device, batch: int, steps: int = 5) -> float:
    """Training samples per second (forward, backward, AdamW step) on random data."""
    S, L = model.cfg.image_size, model.cfg.num_layers
    model.train().requires_grad_(True)
    opt = torch.optim.AdamW(model.parameters(), 1e-4)
    data = {
        "image": torch.rand(batch, 3, S, S, device=device),
        "points": torch.randn(batch, L, S, S, 3, device=device) * 0.3 + torch.tensor([0, 0, 2.0], device=device),
        "valid": torch.rand(batch, L, S, S, device=device) > 0.3,
    }
    from core.geometry.points import PointNormalization

    autocast = bf16_autocast(device)
    for i in range(steps + 1):
        if i == 1:
            sync(device)
            t0 = time.perf_counter()
        with autocast:
            loss, _ = flow_loss(model, data, PointNormalization())
        opt.zero_grad()
        loss.backward()
        opt.step()
    sync(device)
    model.eval()
    return batch * steps / (time.perf_counter() - t0)


def attention_split(model: WTDiT, device: torch.device, repeats: int = 5) -> dict[str, float]:
    """Share of decoder+head block time spent in frame, ray and global blocks (forward hooks)."""
    times = {k: 0.0 for k in BLOCK_TYPES}
    starts = {}
    handles = []

    def start(module, args) -> None:
        sync(device)
        starts[module] = time.perf_counter()

    def stop(module, args, output, kind: str) -> None:
        sync(device)
        times[kind] += time.perf_counter() - starts[module]

    for i, block in enumerate(list(model.blocks) + list(model.head.blocks)):
        kind = BLOCK_TYPES[i % 3] if i < len(model.blocks) else BLOCK_TYPES[(i - len(model.blocks)) % 3]
        handles.append(block.register_forward_pre_hook(start))
        handles.append(block.register_forward_hook(lambda m, a, o, kind=kind: stop(m, a, o, kind)))
    inputs = forward_inputs(model.cfg, 1, device)
    with torch.inference_mode():
        for _ in range(repeats):
            model(*inputs)
    for h in handles:
        h.remove()
    total = sum(times.values())
    return {k: v / total for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--train-batch", type=int, default=16)
    args = parser.parse_args()
    device = pick_device(args.device)
    checkpoint = args.checkpoint or str(default_checkpoint())
    model, _, card = load_model(checkpoint, device)
    cfg = model.cfg
    print(
        f"model {card.name} on {device} ({torch.get_num_threads()} threads): {cfg.image_size}px, L={cfg.num_layers}, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters"
    )
    flops = count_flops(cfg)
    print(
        f"FLOPs per forward: {flops['total'] / 1e9:.2f} GFLOP "
        f"(encoder {flops['encoder'] / flops['total']:.0%}, frame {flops['frame'] / flops['total']:.0%}, "
        f"ray {flops['ray'] / flops['total']:.0%}, global {flops['global'] / flops['total']:.0%})"
    )
    peak = matmul_peak(device)
    print(f"measured matmul peak: {peak / 1e9:.1f} GFLOP/s")
    for steps in (1, 4, 20):
        s = sampling_seconds(model, steps, device)
        print(
            f"inference, {steps:2d} steps: {s:.3f} s/image  ({flops['total'] * steps / s / 1e9:.1f} GFLOP/s, "
            f"{flops['total'] * steps / s / peak:.0%} of peak)"
        )
    print(f"peak memory of a full trace (fresh process): {peak_memory_of_trace(checkpoint, str(device)):.0f} MB")
    sps = training_throughput(model, device, args.train_batch)
    print(
        f"training: {sps:.1f} samples/s at batch {args.train_batch} "
        f"({3 * flops['total'] * sps / 1e9:.1f} GFLOP/s ≈ {3 * flops['total'] * sps / peak:.0%} of peak, "
        "fwd+bwd ≈ 3× fwd)"
    )
    split = attention_split(model, device)
    print("block time split: " + ", ".join(f"{k} {v:.0%}" for k, v in split.items()))


if __name__ == "__main__":
    main()
