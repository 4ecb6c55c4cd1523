"""Held-out evaluation of a model on ground-truth shards (DESIGN.md §6 metrics), with the oracle
ceiling of a perfect depth map, and a figure of predictions against ground truth."""

from __future__ import annotations

import os

import numpy as np
import torch

from ..data.shards import ShardReader
from ..geometry.alignment import align_points_scale_z_shift, apply_scale_z_shift
from ..geometry.points import PointNormalization
from ..inference import predict
from ..model.wtdit import WTDiT
from ..plots import colorize, image_grid, side_view
from ..sampling import DEFAULT_SAMPLING, SampleConfig
from .metrics import evaluate_layered, mean_metrics


def evaluate_model(
    model: WTDiT,
    normalization: PointNormalization,
    reader: ShardReader,
    indices: list[int],
    cfg: SampleConfig = DEFAULT_SAMPLING,
    seed: int = 0,
    batch_size: int = 8,
    max_points: int = 20000,
) -> dict[str, float]:
    """Mean metrics of the model's samples on `indices` of `reader`, against all ground-truth layers.

    The model sees each image with its ground-truth foreground (as the alpha of a user image).
    Keys: l0_* (visible surface), all_* and layer0_* (complete geometry of all predicted layers
    and of predicted layer 0 alone), and oracle_* (ground-truth layer 0 alone: a perfect depth map).
    """
    rows = []
    for start in range(0, len(indices), batch_size):
        idx = indices[start : start + batch_size]
        gt = reader.batch(idx)
        pred = predict(model, normalization, gt["image"], gt["foreground"], cfg, seed + start)
        for b in range(len(idx)):
            g_pts, g_valid = gt["points"][b].numpy(), gt["valid"][b].numpy()
            row = evaluate_layered(
                pred.points[b].cpu().numpy(), pred.valid[b].cpu().numpy(), g_pts, g_valid, max_points
            )
            oracle = evaluate_layered(g_pts[:1], g_valid[:1], g_pts, g_valid, max_points)
            row.update({f"oracle_{k[len('all_') :]}": v for k, v in oracle.items() if k.startswith("all_")})
            rows.append(row)
    return mean_metrics(rows)


def prediction_figure(
    model: WTDiT,
    normalization: PointNormalization,
    reader: ShardReader,
    indices: list[int],
    path: str | os.PathLike,
    cfg: SampleConfig = DEFAULT_SAMPLING,
    seed: int = 0,
) -> None:
    """PNG, two rows per sample: input and per-layer depth of the prediction / the ground truth,
    plus a side view of the predicted / true point cloud (all layers, coloured by layer).

    Predictions are first aligned to the truth by scale and z-shift on layer 0 (as the metrics are),
    so both rows share one depth colour scale.
    """
    gt = reader.batch(indices)
    pred = predict(model, normalization, gt["image"], gt["foreground"], cfg, seed)
    L = model.cfg.num_layers
    rows, labels = [], []
    for b in range(len(indices)):
        image = (gt["image"][b].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        g_pts, g_valid = gt["points"][b, :L].numpy(), gt["valid"][b, :L].numpy()
        p_pts, p_valid = pred.points[b].cpu().numpy(), pred.valid[b].cpu().numpy()
        both = p_valid[0] & g_valid[0]
        if both.sum() >= 2:
            p_pts = apply_scale_z_shift(p_pts, *align_points_scale_z_shift(p_pts[0][both], g_pts[0][both]))
        zg = g_pts[..., 2][g_valid]
        lo, hi = (float(zg.min()), float(zg.max())) if zg.size else (0.0, 1.0)
        for name, pts, valid in (("pred", p_pts, p_valid), ("truth", g_pts, g_valid)):
            z = pts[..., 2]
            depth = [colorize(z[k], valid[k], lo, hi) for k in range(L)]
            rows.append(
                [image if name == "pred" else np.full_like(image, 255)]
                + depth
                + [side_view(pts, valid, image.shape[0])]
            )
            labels.append(f"#{int(reader.index[indices[b]])} {name}")
    image_grid(rows, ["input"] + [f"layer {k}" for k in range(L)] + ["side view"], labels).save(path)


def oracle_and_model_table(metrics: dict[str, float]) -> str:
    """Markdown table of the headline numbers (model vs the perfect-depth-map oracle)."""
    keys = [
        ("l0_abs_rel", "layer-0 AbsRel ↓"),
        ("l0_delta1", "layer-0 δ1 ↑"),
        ("all_cd_l1", "all-layer CD-L1 ↓"),
        ("layer0_cd_l1", "layer-0-only CD-L1 ↓"),
        ("oracle_cd_l1", "perfect depth map CD-L1 ↓"),
        ("all_f@0.01", "all-layer F@0.01 ↑"),
        ("layer0_f@0.01", "layer-0-only F@0.01 ↑"),
        ("oracle_f@0.01", "perfect depth map F@0.01 ↑"),
        ("all_f@0.05", "all-layer F@0.05 ↑"),
        ("layer0_f@0.05", "layer-0-only F@0.05 ↑"),
        ("oracle_f@0.05", "perfect depth map F@0.05 ↑"),
    ]
    lines = ["| metric | value |", "| --- | --- |"]
    lines += [f"| {label} | {metrics[k]:.4f} |" for k, label in keys if k in metrics]
    return "\n".join(lines)


@torch.no_grad()
def validation_loss(
    model,
    reader: ShardReader,
    normalization: PointNormalization,
    schedule: str,
    indices: list[int],
    num_layers: int,
    device: torch.device,
    seed: int = 0,
) -> float:
    """Mean flow loss on fixed held-out samples with a fixed noise seed (comparable across steps)."""
    from .flow import flow_loss

    generator = torch.Generator(device).manual_seed(seed)
    losses = []
    for start in range(0, len(indices), 16):
        batch = {k: v.to(device) for k, v in reader.batch(indices[start : start + 16], num_layers).items()}
        loss, _ = flow_loss(model, batch, normalization, schedule, generator)
        losses.append(loss.item())
    return float(np.mean(losses))
