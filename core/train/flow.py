"""The training side of flow matching: noise schedules, the noisy path and the loss (DESIGN.md §3).

Path x_t = (1 - t)·x0 + t·ε (t = 1 is pure noise); the model predicts x0. Loss: masked
endpoint error plus 0.1 × a monotonic-depth penalty. The endpoint error is either "absolute" (in
network units) or "aligned" (ours, objects): the shape error after the per-sample scale and
z-shift that the evaluation solves for (`core/train/metrics.py`), in units of the object's size,
plus ALIGNED_PLACEMENT × the absolute error so that the placement is still learned.
Anchored samples (ours, objects; `anchor_share`): the visible layer starts from the inflated
foreground placed like the truth (scale jittered by ANCHOR_JITTER) and noised to a time in
[0, ANCHOR_MAX_T), as the anchored sampler (`core/sampling.py`) restarts it, so the network learns to
correct that start toward the truth while the hidden layers come down from their own times.
Clips (dynamic mode) train the same way: the T frames of a clip share one time per layer and one
normalisation scale, every frame's visible layer is anchored together, and the noise (the path's
and the background's) is correlated across frames by `frame_correlation`, as the sampler draws it.
Axes: B batch, T frames, L layers, V = T·L views (frame-major), H×W pixels.
"""

from __future__ import annotations

import torch

from ..geometry.points import PointNormalization, forward_fill_layers
from ..geometry.silhouette import placed_inflation
from ..sampling import SampleConfig, initial_noise

SCHEDULES = ("mixed", "per_layer", "shared_mixture", "logit_normal", "mixed_uniform")
UNIFORM_SHARE = 0.25  # mixed_uniform: share of samples whose layers all take one t ~ U(0, 1)
LOSSES = ("absolute", "aligned")
ALIGNED_PLACEMENT = 0.02  # weight of the absolute endpoint error inside the aligned loss
LOW_NOISE_MEAN = -1.0  # layer 0's logit-normal is shifted toward low noise (our reading of "plateaued")
DEPTH_PENALTY = 0.1  # weight of the monotonic-depth penalty
ANCHOR_MAX_T = 0.4  # anchored samples: the visible layer's time is drawn from U(0, this)
ANCHOR_JITTER = 0.1  # anchored samples: std of the log scale error of the placed inflation


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
    mixed_uniform (ours): mixed, but a share UNIFORM_SHARE of the samples take one t ~ U(0, 1) for all
    layers, so the visible layer is also trained near t = 1, where every sampling run starts (the
    mixed schedule puts under 1 % of its layer-0 times above 0.9).
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
    mixed = torch.where(phase_one, per_layer, shared)
    if schedule == "mixed":
        return mixed
    uniform = torch.rand(batch, 1, generator=generator, device=device).clamp(1e-4, 1 - 1e-4).expand(batch, layers)
    pick_uniform = torch.rand(batch, 1, generator=generator, device=device) < UNIFORM_SHARE
    return torch.where(pick_uniform, uniform, mixed)


def training_target(
    points: torch.Tensor, valid: torch.Tensor, normalization: PointNormalization, frames: int = 1
) -> torch.Tensor:
    """Normalised, forward-filled targets x0 [B, V, H, W, 3] from camera-space points and validity
    [B, V, ...] of `frames` frames (V = frames·L); a clip's frames share one scale."""
    V = valid.shape[1]
    by_frame = (frames, V // frames)
    filled = forward_fill_layers(points.unflatten(1, by_frame), valid.unflatten(1, by_frame)).flatten(1, 2)
    first = slice(0, V, V // frames)  # layer 0 of every frame
    scale = normalization.scale(points[:, first], valid[:, first])  # [B]
    return normalization.normalize(filled, scale) * valid[:, first].repeat_interleave(V // frames, 1)[..., None]


def solve_scale_z_shift(
    pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample, the scale s (on xyz) and z-shift t minimising Σ w·‖s·p + t·e_z − g‖² in closed form
    (the metrics' alignment, `core/geometry/alignment.py`, in torch and batched; differentiable).

    pred, target: points [B, H, W, 3]; weight: [B, H, W] (a mask). Returns s, t [B] in pred's dtype
    (1 and 0 where the normal equations are singular).
    """
    p, g, w = pred.double(), target.double(), weight.double()
    a11 = ((p * p).sum(-1) * w).sum((1, 2))
    a12 = (p[..., 2] * w).sum((1, 2))
    a22 = w.sum((1, 2))
    b1 = ((p * g).sum(-1) * w).sum((1, 2))
    b2 = (g[..., 2] * w).sum((1, 2))
    det = a11 * a22 - a12 * a12
    ok = det.abs() > 1e-12 * (a11 * a22).clamp_min(1e-30)
    safe = torch.where(ok, det, 1.0)
    s = torch.where(ok, (b1 * a22 - a12 * b2) / safe, 1.0)
    t = torch.where(ok, (a11 * b2 - a12 * b1) / safe, 0.0)
    return s.to(pred.dtype), t.to(pred.dtype)


def aligned_shape_error(
    pred: torch.Tensor, target: torch.Tensor, foreground: torch.Tensor, extent: torch.Tensor
) -> torch.Tensor:
    """Mean squared point error after the evaluation's alignment, in units of each object's size.

    pred, target: camera-space points [B, L, H, W, 3]; foreground: [B, H, W] bool; extent: [B], the
    largest bounding-box side of each sample's valid ground truth. Per sample, the scale s (on xyz)
    and z-shift t minimising Σ‖s·p + t·e_z − g‖² over layer 0's foreground are solved in closed
    form (held fixed, like the metrics' alignment) and applied to every layer; the squared error
    ‖s·p + t·e_z − g‖² / extent² is averaged over the foreground pixels of all layers and xyz.
    """
    w = foreground.to(pred.dtype)  # [B, H, W]
    with torch.no_grad():
        s, t = solve_scale_z_shift(pred[:, 0], target[:, 0], w)
    shift = torch.zeros_like(pred[:, :1, :1, :1])  # [B, 1, 1, 1, 3]
    shift[..., 2] = t[:, None, None, None]
    aligned = s[:, None, None, None, None] * pred + shift
    err = ((aligned - target) / extent[:, None, None, None, None]) ** 2  # [B, L, H, W, 3]
    count = w.sum().clamp_min(1.0) * pred.shape[1] * 3
    return (err * w[:, None, ..., None]).sum() / count


def object_extent(points: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Largest bounding-box side [B] of each sample's valid points [B, L, H, W, 3] (1 where none)."""
    inf = torch.tensor(float("inf"), dtype=points.dtype, device=points.device)
    m = valid[..., None]
    lo = torch.where(m, points, inf).flatten(1, -2).amin(1)  # [B, 3]
    hi = torch.where(m, points, -inf).flatten(1, -2).amax(1)
    side = (hi - lo).amax(-1)
    return torch.where(torch.isfinite(side) & (side > 0), side, torch.ones_like(side))


def anchored_start(
    x_t: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    points: torch.Tensor,
    valid: torch.Tensor,
    normalization: PointNormalization,
    share: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_t, t) with the visible layers of a `share` of the samples restarted as the anchored sampler does.

    x_t, noise: [B, V, H, W, 3] network units; t: [B, L]; points, valid: the camera-space truth
    [B, V, H, W, 3] / [B, V, H, W] (V = T·L). A chosen sample's layer 0 (of every frame) becomes
    (1 − t0)·prior + t0·noise with t0 ~ U(0, ANCHOR_MAX_T), the prior being the inflated foreground
    placed like its true layer 0 with its scale off by exp(N(0, ANCHOR_JITTER)) (per frame).
    """
    B, V = x_t.shape[:2]
    first, device = slice(0, V, t.shape[1]), x_t.device  # layer 0 of every frame
    T = V // t.shape[1]
    with torch.no_grad():
        jitter = torch.exp(ANCHOR_JITTER * torch.randn(B * T, generator=generator, device=device))
        placed = (
            placed_inflation(valid[:, first].flatten(0, 1), points[:, first].flatten(0, 1))
            * jitter[:, None, None, None]
        )
        scale = normalization.scale(points[:, first], valid[:, first])
        prior = normalization.normalize(placed.unflatten(0, (B, T)), scale)  # [B, T, H, W, 3]
    t0 = ANCHOR_MAX_T * torch.rand(B, generator=generator, device=device)
    chosen = torch.rand(B, generator=generator, device=device) < share
    x_t, t = x_t.clone(), t.clone()
    start = (1 - t0[:, None, None, None, None]) * prior + t0[:, None, None, None, None] * noise[:, first]
    x_t[:, first] = torch.where(chosen[:, None, None, None, None], start, x_t[:, first])
    t[:, 0] = torch.where(chosen, t0, t[:, 0])
    return x_t, t


def flow_loss(
    model,
    batch: dict[str, torch.Tensor],
    normalization: PointNormalization,
    schedule: str = "mixed",
    generator: torch.Generator | None = None,
    loss: str = "absolute",
    anchor_share: float = 0.0,
    frame_correlation: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """One flow-matching loss evaluation.

    batch: image [B, 3, H, W], points [B, L, H, W, 3], valid [B, L, H, W] (the model's L layers); or a
    clip batch: image [B, T, 3, H, W], points [B, T·L, H, W, 3], valid [B, T·L, H, W] (a temporal model).
    Background pixels (no layer-0 hit) are replaced by pure noise in the input and left out of the loss.
    loss: "absolute" or "aligned" endpoint error (module docstring).
    anchor_share: share of the samples whose visible layer starts from the placed inflation (module docstring).
    frame_correlation: clips: ρ of the noise across frames (module docstring).
    Returns the scalar loss and float statistics for logging.
    """
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose from {', '.join(LOSSES)}")
    points, valid, image = batch["points"], batch["valid"], batch["image"]
    B, V = valid.shape[:2]
    T = image.shape[1] if image.dim() == 5 else 1
    L = V // T
    device = points.device
    x0 = training_target(points, valid, normalization, T)  # [B, V, H, W, 3]
    t = sample_timesteps(B, L, schedule, generator, device)  # [B, L]
    H, W = x0.shape[2:4]

    def draw() -> torch.Tensor:
        if T == 1:
            return torch.randn(x0.shape, generator=generator, device=device)
        return initial_noise(B, T, L, H, W, SampleConfig(frame_correlation=frame_correlation), generator, device)

    noise = draw()
    tt = t.repeat(1, T)[:, :, None, None, None]  # [B, V, 1, 1, 1]: every frame's layers at their layer's time
    x_t = (1 - tt) * x0 + tt * noise
    if anchor_share > 0:
        x_t, t = anchored_start(x_t, t, noise, points, valid, normalization, anchor_share, generator)
    fg = valid[:, ::L].repeat_interleave(L, 1)[..., None]  # [B, V, H, W, 1]: each frame's layer-0 mask
    x_t = torch.where(fg, x_t, draw())
    x0_hat = model(x_t, t, image, valid[:, 0] if T == 1 else None).float()  # [B, V, H, W, 3]

    # From here on every frame is scored as an image of its own: [B·T, L, ...].
    x0_hat, x0, fg = (a.unflatten(1, (T, L)).flatten(0, 1) for a in (x0_hat, x0, fg))
    points, valid = points.unflatten(1, (T, L)).flatten(0, 1), valid.unflatten(1, (T, L)).flatten(0, 1)
    mask = fg[:, :1].float()  # [B·T, 1, H, W, 1]
    count = mask.sum().clamp_min(1.0) * L
    endpoint = ((x0_hat - x0) ** 2 * mask).sum() / (count * 3)
    stats = {}
    if loss == "aligned":
        scale = normalization.scale(points[:, :1], valid[:, :1])
        shape = aligned_shape_error(
            normalization.denormalize(x0_hat, scale),
            normalization.denormalize(x0, scale),
            valid[:, 0],
            object_extent(points, valid),
        )
        stats["aligned"] = shape.item()
        endpoint_term = shape + ALIGNED_PLACEMENT * endpoint
    else:
        endpoint_term = endpoint
    z = x0_hat[..., 2]  # [B·T, L, H, W]
    order = (torch.relu(z[:, :-1] - z[:, 1:]) ** 2 * mask[:, :, ..., 0]).sum() / (
        mask.sum().clamp_min(1.0) * max(L - 1, 1)
    )
    total = endpoint_term + DEPTH_PENALTY * order
    return total, {
        "loss": total.item(),
        "endpoint": endpoint.item(),
        **stats,
        "depth_order": order.item(),
        "t_mean": t.mean().item(),
    }
