"""`python -m core train-surface`: train a checkpoint's anchor net (core/model/surface.py) alone:
the SurfaceNet of an object model, the DepthNet of a scene model (log-median normalisation).

The rest of the model is copied and frozen. The loss is the metric the visible layer is judged by
(DESIGN.md §6): the front the net implies along the true rays (objects: depth 1 − profile · r/f;
scenes: depth e^log-depth) is aligned to the true layer 0 by one scale on xyz and a shift on z
(closed-form least squares), and scored by its mean relative depth error. A checkpoint without the
net gets one of `width` channels that starts as the round inflation (objects) or a constant depth
(scenes); one that has it goes on training it, so each stretch adds to the last. Every stretch
appends its record (command, data, steps, time, validation) to the checkpoint's info under "surface".
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from ..data.shards import ShardReader
from ..geometry.points import PointNormalization, pixel_rays
from ..geometry.silhouette import distance_to_background, round_profile
from ..model.checkpoint import load_checkpoint, save_checkpoint
from ..model.wtdit import WTDiT
from .flow import solve_scale_z_shift
from .loop import typed_command


@dataclass
class SurfaceTrainConfig:
    init: str  # our checkpoint to start from (its SurfaceNet, if any, trains on)
    data: list[str]  # training shard folders (of clip shards, every frame is an image)
    out: str  # the checkpoint written: `init` with the trained SurfaceNet
    val: list[str] | None = None  # held-out shard folders, checked every eval_every steps
    width: int = 24  # full-resolution channels of a new anchor net (multiple of 8)
    steps: int = 1000  # optimizer steps at most
    minutes: float = 0.0  # stop after this many minutes of wall time (0: no limit); the cosine follows it
    batch_size: int = 16  # images per step (clip shards: their frames count)
    lr: float = 1e-3  # peak AdamW learning rate (cosine to 0 after a linear warm-up)
    warmup: int = 50  # warm-up steps
    eval_every: int = 100  # steps between validation checks
    val_count: int = 64  # held-out samples per check
    seed: int = 0
    threads: int = 0  # torch CPU threads (0: torch's default)


def aligned_abs_rel(front: torch.Tensor, points: torch.Tensor, foreground: torch.Tensor) -> torch.Tensor:
    """Per-sample AbsRel [B] of a front [B, H, W, 3] against the true layer 0 [B, H, W, 3] over the
    foreground [B, H, W] bool, after the metrics' scale (xyz) and z-shift alignment."""
    w = foreground.to(front.dtype)
    scale, shift = solve_scale_z_shift(front, points, w)
    z = scale[:, None, None] * front[..., 2] + shift[:, None, None]
    truth = points[..., 2].clamp_min(1e-6)
    return ((z - truth).abs() / truth * w).sum((1, 2)) / w.sum((1, 2)).clamp_min(1)


def aligned_front_error(
    profile: torch.Tensor,
    distance: torch.Tensor,
    points: torch.Tensor,
    foreground: torch.Tensor,
    intrinsics: torch.Tensor,
) -> torch.Tensor:
    """Per-sample AbsRel [B] of the front a profile implies, aligned to the truth as the metrics align.

    profile, distance [B, H, W] (distance: the mask's distance transform); points [B, H, W, 3] true
    layer 0; foreground [B, H, W] bool; intrinsics [B, 3, 3] true camera.
    """
    H, W = foreground.shape[1:]
    r = distance.flatten(1).amax(1).clamp_min(1e-6)[:, None, None]
    front = (1 - profile * r / intrinsics[:, 0, 0, None, None])[..., None] * pixel_rays(intrinsics, H, W)
    return aligned_abs_rel(front, points, foreground)


def aligned_depth_error(
    log_depth: torch.Tensor, points: torch.Tensor, foreground: torch.Tensor, intrinsics: torch.Tensor
) -> torch.Tensor:
    """Per-sample AbsRel [B] of the depth e^log_depth [B, H, W] along the true rays, aligned to the
    true layer 0 as the metrics align (arguments as `aligned_front_error`'s)."""
    H, W = foreground.shape[1:]
    return aligned_abs_rel(torch.exp(log_depth)[..., None] * pixel_rays(intrinsics, H, W), points, foreground)


def surface_batch(reader: ShardReader, indices, mirror: bool = False) -> dict[str, torch.Tensor]:
    """Samples' image [N, 3, H, W], foreground [N, H, W], its distance transform, true layer 0
    [N, H, W, 3] and camera [N, 3, 3]; every frame of a clip shard is a sample of its own (N = B·T).
    `mirror` flips them left to right (the principal point mirrored with them)."""
    b = reader.batch(indices, 1)
    H, W = reader.resolution
    image, foreground = b["image"].reshape(-1, 3, H, W), b["foreground"].reshape(-1, H, W)
    points, K = b["points"].flatten(0, 1), b["intrinsics"].repeat_interleave(reader.frames, 0)
    if mirror:
        image, foreground, points = image.flip(-1), foreground.flip(-1), points.flip(-2)
        points = points * torch.tensor([-1.0, 1.0, 1.0])
        K = K.clone()
        K[:, 0, 2] = W - K[:, 0, 2]
    return {
        "image": image, "foreground": foreground, "distance": distance_to_background(foreground),
        "points": points, "intrinsics": K,
    }  # fmt: skip


def anchor_net(model: WTDiT) -> torch.nn.Module:
    """The net `train-surface` trains: the model's DepthNet, else its SurfaceNet."""
    net = model.depth if model.depth is not None else model.surface
    assert net is not None, "the model has no anchor net"
    return net


def surface_error(model: WTDiT, batch: dict[str, torch.Tensor], untrained: bool = False) -> torch.Tensor:
    """Per-sample aligned error [B] of the model's anchor net, or (`untrained`) of what it starts as:
    the round inflation (SurfaceNet) or a constant depth (DepthNet)."""
    image, foreground, points, K = batch["image"], batch["foreground"], batch["points"], batch["intrinsics"]
    if model.depth is not None:
        log_depth = torch.zeros_like(foreground, dtype=image.dtype) if untrained else model.depth(image, foreground)
        return aligned_depth_error(log_depth, points, foreground, K)
    assert model.surface is not None
    if untrained:
        profile = round_profile(batch["distance"])[0]
    else:
        profile = model.surface(image, foreground, batch["distance"])
    return aligned_front_error(profile, batch["distance"], points, foreground, K)


def with_surface(init: str, width: int) -> tuple[WTDiT, PointNormalization, dict]:
    """(model, normalisation, info) of checkpoint `init`, with a new anchor net of `width` channels if
    it has none: a DepthNet for a scene model (log-median normalisation), else a SurfaceNet."""
    model, normalization, info = load_checkpoint(init)
    if model.surface is None and model.depth is None:
        scene = normalization.mode == "log_median"
        grown_cfg = replace(model.cfg, depth_width=width) if scene else replace(model.cfg, surface_width=width)
        grown = WTDiT(grown_cfg)
        missing, unexpected = grown.load_state_dict(model.state_dict(), strict=False)
        prefix = "depth." if scene else "surface."
        assert not unexpected and all(k.startswith(prefix) for k in missing), (missing, unexpected)
        model = grown
    return model, normalization, info


def train_surface(cfg: SurfaceTrainConfig, log: Callable[[str], object] = print) -> Path:
    """Train the anchor net of cfg.init on cfg.data and write cfg.out; returns its path."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model, normalization, info = with_surface(cfg.init, cfg.width)
    for p in model.parameters():
        p.requires_grad_(False)
    net = anchor_net(model).train()
    for p in net.parameters():
        p.requires_grad_(True)
    data = ShardReader(cfg.data)
    val = ShardReader(cfg.val) if cfg.val else None
    val_batch = surface_batch(val, range(min(cfg.val_count, len(val)))) if val else None
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    rng = torch.Generator().manual_seed(cfg.seed)
    t0, checks, step = time.perf_counter(), [], 0

    def check() -> None:
        if val_batch is None:
            return
        net.eval()
        with torch.no_grad():
            now, floor = surface_error(model, val_batch).mean(), surface_error(model, val_batch, untrained=True).mean()
        net.train()
        start = "constant depth" if model.depth is not None else "inflation"
        checks.append({"step": step, "abs_rel": round(float(now), 5), start: round(float(floor), 5)})
        log(f"step {step}: held-out visible-layer AbsRel {float(now):.4f} ({start} {float(floor):.4f})")

    check()
    while step < cfg.steps:
        elapsed = (time.perf_counter() - t0) / 60
        if cfg.minutes and elapsed >= cfg.minutes:
            break
        progress = max(step / cfg.steps, elapsed / cfg.minutes if cfg.minutes else 0.0)
        lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        indices = torch.randperm(len(data), generator=rng)[: max(1, cfg.batch_size // data.frames)].tolist()
        batch = surface_batch(data, indices, mirror=bool(torch.rand(1, generator=rng) < 0.5))
        loss = surface_error(model, batch).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimizer.step()
        step += 1
        if step % cfg.eval_every == 0:
            log(f"step {step}: loss {loss.item():.4f}, lr {lr:.2e}, {time.perf_counter() - t0:.0f} s")
            check()
    if not checks or checks[-1]["step"] != step:
        check()
    record = {
        "command": typed_command(),
        "config": asdict(cfg),
        "data": {"folders": cfg.data, "samples": len(data) * data.frames},  # images: every frame of a clip
        "steps": step,
        "wall_time_s": round(time.perf_counter() - t0),
        "hardware": f"{os.cpu_count()}-core CPU, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "validation": checks,
    }
    info = {**info, "surface": [*info.get("surface", []), record]}
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out, model.state_dict(), model.cfg, normalization, info)
    log(f"wrote {out} ({step} steps; record: {json.dumps(checks[-1]) if checks else 'no validation'})")
    return out
