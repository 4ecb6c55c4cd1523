"""Timing shared by the benchmarks: device synchronisation and the seconds of one sampling."""

from __future__ import annotations

import time

import torch

from core.inference import model_callable
from core.model.wtdit import WTDiT
from core.sampling import SampleConfig, initial_noise, sample_steps


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock times measure it."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def sampling_seconds(
    model: WTDiT, steps: int, device: torch.device, repeats: int = 3, timed_steps: int | None = None
) -> float:
    """Wall seconds for one `steps`-step Euler sample of a random image at the model's resolution, best of
    `repeats`; with timed_steps < steps, the time of the first timed_steps steps scaled up."""
    S, L = model.cfg.image_size, model.cfg.num_layers
    timed = timed_steps or steps
    image = torch.rand(1, 3, S, S, device=device)
    fn = model_callable(model)
    best = float("inf")
    for _ in range(repeats):
        noise = initial_noise(1, 1, L, S, S, device=device)
        sync(device)
        t0 = time.perf_counter()
        for i, _ in enumerate(sample_steps(fn, image, noise, SampleConfig(steps=steps))):
            if i + 1 == timed:
                break
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best * steps / timed
