"""Held-out evaluation of a model on ground-truth shards (DESIGN.md §6 metrics), always beside the
non-learned floor of silhouette inflation and the ceiling of a perfect depth map, and a figure of
predictions, the floor and the ground truth."""

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
from .baselines import silhouette_inflation
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
    """Mean metrics of the model's samples on `indices` of `reader`, against all ground-truth layers,
    with the same metrics of the two references on the same samples.

    The model sees each image with its ground-truth foreground (as the alpha of a user image).
    Keys: l0_* (visible surface), all_* and layer0_* (complete geometry of all predicted layers and
    of predicted layer 0 alone); the same keys prefixed `inflation_` (silhouette inflation of the
    ground-truth mask) and `oracle_` (ground-truth layer 0 alone: a perfect depth map).
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
            for name, (points, valid) in reference_predictions(g_pts, g_valid).items():
                row.update(
                    {f"{name}_{k}": v for k, v in evaluate_layered(points, valid, g_pts, g_valid, max_points).items()}
                )
            rows.append(row)
    return mean_metrics(rows)


def reference_predictions(points: np.ndarray, valid: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The floor and the ceiling for one ground truth (L, H, W, 3) / (L, H, W): {"inflation": silhouette
    inflation of its layer-0 mask, "oracle": its layer 0 alone}, each as (points, valid)."""
    inflated, inflated_valid, _ = silhouette_inflation(valid[0])
    return {"inflation": (inflated, inflated_valid), "oracle": (points[:1], valid[:1])}


def prediction_figure(
    model: WTDiT,
    normalization: PointNormalization,
    reader: ShardReader,
    indices: list[int],
    path: str | os.PathLike,
    cfg: SampleConfig = DEFAULT_SAMPLING,
    seed: int = 0,
) -> None:
    """PNG, three rows per sample: input and per-layer depth of the prediction / of silhouette
    inflation / of the ground truth, plus a side view of each point cloud (coloured by layer).

    Predictions and the floor are first aligned to the truth by scale and z-shift on layer 0 (as the
    metrics are), so the rows share one depth colour scale.
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
        i_pts, i_valid = reference_predictions(g_pts, g_valid)["inflation"]
        i_pts = apply_scale_z_shift(i_pts, *align_points_scale_z_shift(i_pts[0][g_valid[0]], g_pts[0][g_valid[0]]))
        for name, pts, valid in (("pred", p_pts, p_valid), ("inflation", i_pts, i_valid), ("truth", g_pts, g_valid)):
            z = pts[..., 2]
            depth = [colorize(z[k], valid[k], lo, hi) if k < len(z) else np.zeros_like(image) for k in range(L)]
            rows.append(
                [image if name == "pred" else np.full_like(image, 255)]
                + depth
                + [side_view(pts, valid, image.shape[0])]
            )
            labels.append(f"#{int(reader.index[indices[b]])} {name}")
    image_grid(rows, ["input"] + [f"layer {k}" for k in range(L)] + ["side view"], labels).save(path)


HEADLINE = [
    ("l0_abs_rel", "layer-0 AbsRel ↓"),
    ("l0_delta1", "layer-0 δ1 ↑"),
    ("all_cd_l1", "Chamfer-L1, all layers ↓"),
    ("layer0_cd_l1", "Chamfer-L1, layer 0 only ↓"),
    ("all_f@0.01", "F@0.01, all layers ↑"),
    ("layer0_f@0.01", "F@0.01, layer 0 only ↑"),
    ("all_f@0.05", "F@0.05, all layers ↑"),
    ("layer0_f@0.05", "F@0.05, layer 0 only ↑"),
]


def comparison_table(metrics: dict[str, float], model: str = "model") -> str:
    """Markdown table of the headline numbers: the model beside silhouette inflation and a perfect depth map."""
    lines = [
        f"| metric | {model} | silhouette inflation (no learning) | perfect depth map |",
        "| --- | --- | --- | --- |",
    ]
    for key, label in HEADLINE:
        values = [metrics.get(k, float("nan")) for k in (key, f"inflation_{key}", f"oracle_{key}")]
        lines.append(f"| {label} | " + " | ".join(f"{v:.4f}" for v in values) + " |")
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
