"""The released models' shapes with random weights: seconds per 20-step sample (r75b at 504 px,
r69l at 840 px), and a `model.pt`-like file in the official key layout to trace end to end.

    python benchmarks/bench_official.py [--configs r75b r69l] [--steps 20] [--device auto] [--compile] [--check]
    python benchmarks/bench_official.py --configs r75b --write r75b_random.pt --no-timing

On CUDA the weights are bf16 and attention runs through SDPA's flash kernels; the figure is the best
of two full samplings after a warm-up. On a CPU, `--cpu-steps` steps (default 1) are timed and scaled
to `--steps`. The official figures to beat: ~13 s (r75b) and ~17 s (r69l) on an A100/H100.
`--check` first compares one forward of the timed model (bf16, compiled if asked) with the eager fp32
model of the same weights: the largest deviation relative to the output's range must stay within
BF16_TOLERANCE.
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from timing import sampling_seconds

from core.inference import pick_device
from core.model.cost import count_flops
from core.model.official import ours_to_official
from core.model.wtdit import WTDiT, build_config


def random_model(name: str, device: torch.device, seed: int = 0) -> WTDiT:
    """A released-shape WT-DiT with seeded random weights; zero-initialised outputs get small noise
    so the network's output depends on every block."""
    torch.manual_seed(seed)
    with device:
        model = WTDiT(build_config(name))
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(0, 0.02)
    return model.eval().requires_grad_(False)


BF16_TOLERANCE = 0.05  # largest |bf16 − fp32| over the fp32 output's largest magnitude


def deviation_from_fp32(reference: WTDiT, timed, device: torch.device, bf16: bool) -> float:
    """max |timed − reference| / max |reference| of one forward on a seeded random input (t = 0.5)."""
    S, L = reference.cfg.image_size, reference.cfg.num_layers
    g = torch.Generator(device).manual_seed(0)
    x = torch.randn(1, L, S, S, 3, generator=g, device=device)
    image = torch.rand(1, 3, S, S, generator=g, device=device)
    t = torch.full((1,), 0.5, device=device)
    with torch.inference_mode():
        expected = reference(x, t, image).float()
        with torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext():
            got = timed(x, t, image).float()
    return float((got - expected).abs().max() / expected.abs().max().clamp_min(1e-12))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["r75b", "r69l"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cpu-steps", type=int, default=1, help="steps actually timed on a CPU")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA)")
    parser.add_argument("--write", help="also save the (first) model's weights in the official layout (.pt)")
    parser.add_argument("--no-timing", action="store_true")
    parser.add_argument("--check", action="store_true", help="compare the timed model with eager fp32 first")
    parser.add_argument(
        "--dtype", choices=["auto", "float32", "bfloat16"], default="auto", help="weights (auto: bf16 on CUDA)"
    )
    args = parser.parse_args()
    device = pick_device(args.device)
    for name in args.configs:
        t0 = time.perf_counter()
        model = random_model(name, device)
        print(
            f"{name}: {sum(p.numel() for p in model.parameters()) / 1e9:.3f} B parameters, "
            f"{model.cfg.image_size}px, built with random weights in {time.perf_counter() - t0:.0f} s on {device}"
        )
        if args.write:
            torch.save(ours_to_official(model.state_dict()), args.write)
            print(f"wrote {args.write} (official key layout)")
            args.write = None
        bf16 = args.dtype == "bfloat16" or (args.dtype == "auto" and device.type == "cuda")
        if args.no_timing and not args.check:
            continue
        if bf16:
            model = model.to(torch.bfloat16)
        if args.compile:
            model = torch.compile(model)
        if args.check:
            error = deviation_from_fp32(random_model(name, device), model, device, bf16)
            verdict = "within" if error <= BF16_TOLERANCE else "OUTSIDE"
            print(
                f"{name}: {'bf16' if bf16 else 'fp32'} vs eager fp32: deviation {error:.4f}, {verdict} {BF16_TOLERANCE}"
            )
        if args.no_timing:
            continue
        gpu = device.type == "cuda"
        if gpu:
            sampling_seconds(model, args.steps, device, repeats=1, timed_steps=1)  # warm-up (and compilation)
        s = sampling_seconds(
            model, args.steps, device, repeats=2 if gpu else 1, timed_steps=args.steps if gpu else args.cpu_steps
        )
        flops = count_flops(build_config(name))["total"] * args.steps
        print(
            f"{name}: {s:.2f} s per {args.steps}-step sample on {torch.cuda.get_device_name() if gpu else 'cpu'}"
            f"{'' if gpu else f' (from {args.cpu_steps} timed steps)'}, {flops / s / 1e12:.1f} TFLOP/s"
            + (f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if gpu else "")
        )
        del model
        if gpu:
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
