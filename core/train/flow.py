"""The training side of flow matching: noise schedules, the noisy path and the loss (DESIGN.md §3).

Path x_t = (1 - t)·x0 + t·ε (t = 1 is pure noise); the model predicts x0. Loss: masked
endpoint error plus 0.1 × a monotonic-depth penalty. Axes: B batch, L layers, H×W pixels.
"""

from __future__ import annotations

import torch

from ..geometry.points import PointNormalization, forward_fill_layers

SCHEDULES = ("mixed", "per_layer", "shared_mixture", "logit_normal")
LOW_NOISE_MEAN = -1.0  # layer 0's logit-normal is shifted toward low noise (our reading of "plateaued")
DEPTH_PENALTY = 0.1  # weight of the monotonic-depth penalty


def logit_normal(
    shape: tuple[int, ...],
    mean: float = 0.0,
    std: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """sigmoid(N(mean, std)) samples in (0, 1)."""
    return torch.sigmoid(mean + std * torch.randn(shape, generator=generator, device=device))


def sample_timesteps(
    batch: int,
    layers: int,
    schedule: str = "mixed",
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Training times [B, L].

    per_layer (phase i): layer 0 from the low-noise logit-normal, hidden layers from the standard one.
    shared_mixture (phase ii): one t per sample from a 50/50 mixture of those two.
    mixed: each sample follows phase i or phase ii with probability 1/2.
    logit_normal (ablation): one t per sample from the standard logit-normal.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose from {', '.join(SCHEDULES)}")
    standard = logit_normal((batch, layers), generator=generator, device=device)
    if schedule == "logit_normal":
        return standard[:, :1].expand(batch, layers).contiguous()
    low = logit_normal((batch, layers), LOW_NOISE_MEAN, generator=generator, device=device)
    per_layer = torch.cat([low[:, :1], standard[:, 1:]], dim=1)
    pick_low = torch.rand(batch, 1, generator=generator, device=device) < 0.5
    shared = torch.where(pick_low, low[:, 1:2], standard[:, :1]).expand(batch, layers)
    if schedule == "per_layer":
        return per_layer
    if schedule == "shared_mixture":
        return shared.contiguous()
    phase_one = torch.rand(batch, 1, generator=generator, device=device) < 0.5
    return torch.where(phase_one, per_layer, shared)


def training_target(points: torch.Tensor, valid: torch.Tensor, normalization: PointNormalization) -> torch.Tensor:
    """Normalised, forward-filled targets x0 [B, L, H, W, 3] from camera-space points and validity."""
    filled = forward_fill_layers(points, valid)  # [B, L, H, W, 3]
    scale = normalization.scale(points[:, :1], valid[:, :1])  # [B]
    return normalization.normalize(filled, scale) * valid[:, :1, ..., None]


def flow_loss(
    model,
    batch: dict[str, torch.Tensor],
    normalization: PointNormalization,
    schedule: str = "mixed",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """One flow-matching loss evaluation.

    batch: image [B, 3, H, W], points [B, L, H, W, 3], valid [B, L, H, W] (the model's L layers).
    Background pixels (no layer-0 hit) are replaced by pure noise in the input and left out of the loss.
    Returns the scalar loss and float statistics for logging.
    """
    points, valid, image = batch["points"], batch["valid"], batch["image"]
    B, L = valid.shape[:2]
    device = points.device
    x0 = training_target(points, valid, normalization)  # [B, L, H, W, 3]
    t = sample_timesteps(B, L, schedule, generator, device)  # [B, L]
    noise = torch.randn(x0.shape, generator=generator, device=device)
    tt = t[:, :, None, None, None]
    x_t = (1 - tt) * x0 + tt * noise
    fg = valid[:, :1, ..., None]  # [B, 1, H, W, 1]
    x_t = torch.where(fg, x_t, torch.randn(x0.shape, generator=generator, device=device))
    x0_hat = model(x_t, t, image, valid[:, 0]).float()  # [B, L, H, W, 3]

    mask = fg.float()
    count = mask.sum().clamp_min(1.0) * L
    endpoint = ((x0_hat - x0) ** 2 * mask).sum() / (count * 3)
    z = x0_hat[..., 2]  # [B, L, H, W]
    order = (torch.relu(z[:, :-1] - z[:, 1:]) ** 2 * mask[:, :, ..., 0]).sum() / (
        mask.sum().clamp_min(1.0) * max(L - 1, 1)
    )
    loss = endpoint + DEPTH_PENALTY * order
    return loss, {
        "loss": loss.item(),
        "endpoint": endpoint.item(),
        "depth_order": order.item(),
        "t_mean": t.mean().item(),
    }
