"""Size and cost of WT-DiT configs: parameters, FLOPs per forward and their split by block kind.

FLOPs are counted by torch's FlopCounterMode on the meta device (no memory, no compute), so
even the 1.7B-parameter released configs are summarised instantly.
"""

from __future__ import annotations

import time
from collections import defaultdict
from functools import lru_cache

import torch
from torch.utils.flop_counter import FlopCounterMode

from .wtdit import BLOCK_TYPES, WTDiT, WTDiTConfig


def forward_inputs(cfg: WTDiTConfig, batch: int = 1, device: str | torch.device = "meta", frames: int = 1):
    """Random (x_t, t, image) of the right shapes for one forward, and a foreground disk for models
    with the silhouette prior."""
    S = cfg.image_size
    x = torch.randn(batch, frames * cfg.num_layers, S, S, 3, device=device)
    t = torch.rand(batch, device=device)
    image = (
        torch.rand(batch, frames, 3, S, S, device=device) if frames > 1 else torch.rand(batch, 3, S, S, device=device)
    )
    if not cfg.silhouette_prior:
        return x, t, image
    rows, cols = torch.meshgrid(torch.arange(S, device=device), torch.arange(S, device=device), indexing="ij")
    disk = (rows - S / 2) ** 2 + (cols - S / 2) ** 2 < (S / 3) ** 2
    return x, t, image, disk.expand(batch, S, S)


def block_kind(module_name: str) -> str | None:
    """'frame', 'ray', 'global' or 'temporal' for a block's module name, None for anything else."""
    parts = module_name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part in ("blocks", "temporal_blocks") and parts[i + 1].isdigit() and (i == 0 or parts[i - 1] != "encoder"):
            if len(parts) > i + 2:
                return None  # a submodule of a block: counted at the block itself
            return "temporal" if part == "temporal_blocks" else BLOCK_TYPES[int(parts[i + 1]) % 3]
    return None


def count_flops(cfg: WTDiTConfig, batch: int = 1) -> dict[str, int]:
    """FLOPs of one forward (multiply-adds count 2): 'total', 'encoder', and per block kind."""
    device = "cpu" if cfg.silhouette_prior else "meta"  # the prior's distance transform needs real data
    with torch.device(device):
        model = WTDiT(cfg)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(*forward_inputs(cfg, batch, device))
    counts = counter.get_flop_counts()
    split: defaultdict[str, int] = defaultdict(int)
    for name, ops in counts.items():
        kind = block_kind(name.replace("WTDiT.", "", 1))
        if kind:
            split[kind] += sum(ops.values())
    split["encoder"] = sum(counts.get("WTDiT.encoder", {}).values())
    split["total"] = counter.get_total_flops()
    return dict(split)


def count_parameters(cfg: WTDiTConfig) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in WTDiT(cfg).parameters())


def model_summary(cfg: WTDiTConfig) -> str:
    """A few lines: shape of the config, parameters, FLOPs per forward and the split by kind."""
    flops = count_flops(cfg)
    tokens = cfg.num_layers * (cfg.image_size // cfg.patch_size) ** 2
    kinds = ", ".join(
        f"{k} {flops[k] / flops['total']:.0%}"
        for k in ("encoder", "frame", "ray", "global", "temporal")
        if flops.get(k)
    )
    return (
        f"{cfg.image_size}px patch {cfg.patch_size}, L={cfg.num_layers}, D={cfg.dim}, "
        f"{cfg.depth}+{cfg.head_depth} blocks, "
        f"{tokens} tokens\n  parameters {count_parameters(cfg) / 1e6:.2f}M, "
        f"forward {flops['total'] / 1e9:.2f} GFLOP ({kinds})"
    )


# Share of the measured matmul rate a whole WT-DiT forward reaches (benchmarks/bench_model.py).
# CPU, measured on 2 cores: tiny 63–67 % of the GEMM peak, r75b roughly 75 % (one step, shared CPU).
# GPU and MPS: not yet
# measured (no GPU lent so far), conservative guesses.
EFFICIENCY = {"cpu": 0.65, "cuda": 0.4, "mps": 0.3}


@lru_cache(maxsize=4)
def matmul_rate(device: str) -> float:
    """Measured FLOP/s of a 1024³ matmul on `device` (float32; bf16 on CUDA), cached per process."""
    dev = torch.device(device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    a = torch.randn(1024, 1024, device=dev, dtype=dtype)
    a @ a
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(4):
        a @ a
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return 4 * 2 * 1024**3 / (time.perf_counter() - t0)


def estimate_seconds(forward_flops: float, steps: int, device: str, samples: int = 1) -> float:
    """Seconds a trace of `steps` sampler steps will take on `device` (model time only)."""
    kind = torch.device(device).type
    return forward_flops * steps * samples / (matmul_rate(device) * EFFICIENCY.get(kind, 0.3))
