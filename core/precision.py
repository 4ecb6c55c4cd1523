"""Where bf16 runs natively, and the autocast the model runs under there (sampling and training)."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from functools import cache

import torch


@cache
def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 matrix products natively: CUDA, and CPUs with AVX512-BF16 or AMX
    (there bf16 linear layers take 2.3× less time than float32 ones; elsewhere bf16 is emulated, slower).
    Asked once per device: the sampler asks on every step."""
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def bf16_autocast(device: torch.device) -> AbstractContextManager:
    """bf16 autocast on `device` where it runs natively (`native_bf16`), else a context that changes nothing.
    Weights, gradients and optimizer state stay float32."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if native_bf16(device) else nullcontext()
