"""Held-out evaluation of a model on ground-truth shards (DESIGN.md §6 metrics), always beside
non-learned floors and the ceiling of a perfect depth map, and a figure of predictions, the floor
and the ground truth. Object data: the floor is silhouette inflation; scene data: a constant depth
and the best row ramp (`core/train/baselines.py`), with the visible depth also scored alone after a
scale-and-shift fit, as real-photo depth benchmarks do."""

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
from .baselines import scene_floors, silhouette_inflation
from .metrics import aligned_depth_metrics, evaluate_layered, mean_metrics, paired_standard_errors

FLOOR = {"object": "inflation", "scene": "ramp"}  # the floor the figure shows and the model is paired with


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
    with the same metrics of the references on the same samples.

    The model sees each image with its ground-truth foreground (as the alpha of a user image).
    Keys: l0_* (visible surface), all_* and layer0_* (complete geometry of all predicted layers and
    of predicted layer 0 alone), depth_abs_rel and depth_delta1 (layer-0 depth alone, scale-and-shift
    fitted); the same keys prefixed by each reference's name (`reference_predictions`): `inflation_`
    (object data) or `constant_` and `ramp_` (scene data), and `oracle_` (ground-truth layer 0
    alone: a perfect depth map); and for every key the standard error of the model's per-sample
    difference from the floor (`FLOOR`), keyed `{floor}_{key}_paired_se` (`paired_standard_errors`).
    """
    rows = []
    for start in range(0, len(indices), batch_size):
        idx = indices[start : start + batch_size]
        gt = reader.batch(idx)
        pred = predict(model, normalization, gt["image"], gt["foreground"], cfg, seed + start)
        for b in range(len(idx)):
            g_pts, g_valid = gt["points"][b].numpy(), gt["valid"][b].numpy()
            predictions = {
                "": (pred.points[b].cpu().numpy(), pred.valid[b].cpu().numpy()),
                **reference_predictions(g_pts, g_valid, gt["intrinsics"][b].numpy(), reader.mode),
            }
            row: dict[str, float] = {}
            for name, (points, valid) in predictions.items():
                prefix = f"{name}_" if name else ""
                row |= {prefix + k: v for k, v in sample_metrics(points, valid, g_pts, g_valid, max_points).items()}
            rows.append(row)
    return mean_metrics(rows) | paired_standard_errors(rows, FLOOR[reader.mode])


def sample_metrics(
    points: np.ndarray, valid: np.ndarray, gt_points: np.ndarray, gt_valid: np.ndarray, max_points: int
) -> dict[str, float]:
    """`evaluate_layered`'s metrics of one prediction, plus depth_abs_rel and depth_delta1 of its
    layer 0 (`aligned_depth_metrics`)."""
    common = valid[0] & gt_valid[0]
    depth = aligned_depth_metrics(points[0, ..., 2], gt_points[0, ..., 2], common)
    return evaluate_layered(points, valid, gt_points, gt_valid, max_points) | {
        f"depth_{k}": v for k, v in depth.items()
    }


def reference_predictions(
    points: np.ndarray, valid: np.ndarray, intrinsics: np.ndarray, mode: str = "object"
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The floors and the ceiling for one ground truth (L, H, W, 3) / (L, H, W) with camera
    intrinsics (3, 3), each as (points, valid): object data {"inflation": silhouette inflation of its
    layer-0 mask}, scene data {"constant", "ramp"} (`scene_floors`); both {"oracle": its layer 0
    alone}."""
    if mode == "scene":
        floors = scene_floors(points, valid, intrinsics)
    else:
        inflated, inflated_valid, _ = silhouette_inflation(valid[0])
        floors = {"inflation": (inflated, inflated_valid)}
    return {**floors, "oracle": (points[:1], valid[:1])}


def prediction_figure(
    model: WTDiT,
    normalization: PointNormalization,
    reader: ShardReader,
    indices: list[int],
    path: str | os.PathLike,
    cfg: SampleConfig = DEFAULT_SAMPLING,
    seed: int = 0,
) -> None:
    """PNG, three rows per sample: input and per-layer depth of the prediction / of the floor
    (`FLOOR`) / of the ground truth, plus a side view of each point cloud (coloured by layer).

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
        floor = FLOOR[reader.mode]
        i_pts, i_valid = reference_predictions(g_pts, g_valid, gt["intrinsics"][b].numpy(), reader.mode)[floor]
        both = i_valid[0] & g_valid[0]
        i_pts = apply_scale_z_shift(i_pts, *align_points_scale_z_shift(i_pts[0][both], g_pts[0][both]))
        for name, pts, valid in (("pred", p_pts, p_valid), (floor, i_pts, i_valid), ("truth", g_pts, g_valid)):
            z = pts[..., 2]
            depth = [colorize(z[k], valid[k], lo, hi) if k < len(z) else np.zeros_like(image) for k in range(L)]
            rows.append(
                [image if name == "pred" else np.full_like(image, 255)]
                + depth
                + [side_view(pts, valid, image.shape[0])]
            )
            labels.append(f"#{int(reader.index[indices[b]])} {name}")
    image_grid(rows, ["input"] + [f"layer {k}" for k in range(L)] + ["side view"], labels).save(path)


HEADLINE = {
    "object": [
        ("l0_abs_rel", "layer-0 AbsRel ↓"),
        ("l0_delta1", "layer-0 δ1 ↑"),
        ("all_cd_l1", "Chamfer-L1, all layers ↓"),
        ("layer0_cd_l1", "Chamfer-L1, layer 0 only ↓"),
        ("all_f@0.01", "F@0.01, all layers ↑"),
        ("layer0_f@0.01", "F@0.01, layer 0 only ↑"),
        ("all_f@0.05", "F@0.05, all layers ↑"),
        ("layer0_f@0.05", "F@0.05, layer 0 only ↑"),
    ],
    "scene": [
        ("depth_abs_rel", "visible depth AbsRel (scale+shift fit) ↓"),
        ("depth_delta1", "visible depth δ1 (scale+shift fit) ↑"),
        ("l0_abs_rel", "layer-0 AbsRel ↓"),
        ("all_cd_l1", "Chamfer-L1, all layers ↓"),
        ("all_f@0.05", "F@0.05, all layers ↑"),
    ],
}
REFERENCES = {
    "object": [("inflation", "silhouette inflation (no learning)"), ("oracle", "perfect depth map")],
    "scene": [
        ("constant", "constant depth"),
        ("ramp", "depth linear in the row (best fit)"),
        ("oracle", "perfect depth map"),
    ],
}


def comparison_table(metrics: dict[str, float], model: str = "model", mode: str = "object") -> str:
    """Markdown table of the headline numbers of object or scene data: the model beside the floors
    and a perfect depth map, and last the model's gap to the floor (`FLOOR`) with twice its paired
    standard error where the metrics have it."""
    references, floor = REFERENCES[mode], FLOOR[mode]
    floor_label = dict(references)[floor]
    lines = [
        f"| metric | {model} | " + " | ".join(label for _, label in references) + f" | model − {floor_label} |",
        "| --- " * (len(references) + 3) + "|",
    ]
    for key, label in HEADLINE[mode]:
        values = [metrics.get(k, float("nan")) for k in (key, *(f"{name}_{key}" for name, _ in references))]
        gap = f"{values[0] - metrics.get(f'{floor}_{key}', float('nan')):+.4f}"
        if f"{floor}_{key}_paired_se" in metrics:
            gap += f" ± {2 * metrics[f'{floor}_{key}_paired_se']:.4f}"
        lines.append(f"| {label} | " + " | ".join(f"{v:.4f}" for v in values) + f" | {gap} |")
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
