"""Evaluation of a predicted layered point map against ground truth (DESIGN.md §6).

Both maps are arrays: points (L, H, W, 3) float32 in OpenCV camera space (z forward, ground-truth
depth positive) and valid (L, H, W) bool, layers filled front to back; the two may differ in L.

Per sample, the prediction is aligned to the ground truth with one scale on xyz plus a shift on z
(closed-form least squares on layer 0, as LaRI does), then scored on
  - the visible surface (layer 0): AbsRel, δ<1.25, MAE and RMSE of depth, relative point error;
  - the complete geometry: Chamfer L1/L2 and F-score between the predicted points (all layers, and
    layer 0 alone) and the ground-truth surface samples.
Distances are in units of the object's size: every coordinate (after alignment) is divided by the
largest side of the axis-aligned bounding box of the valid ground-truth points, so the F-score
thresholds 0.01 and 0.05 mean 1% and 5% of the object's size, and MAE/RMSE/Chamfer are likewise
fractions of it.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from ..geometry.alignment import align_points_scale_z_shift, apply_scale_z_shift

VISIBLE_KEYS = ("abs_rel", "delta1", "mae", "rmse", "point_rel", "scale", "shift")


def visible_surface_metrics(pred_points: np.ndarray, gt_points: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Depth and point errors of one aligned layer over `mask`.

    pred_points, gt_points: (H, W, 3); mask: (H, W) bool. Aligns with `align_points_scale_z_shift`
    on the mask, then reports on aligned depth z: abs_rel = mean |z_p − z_g|/z_g, delta1 = share
    with max(z_p/z_g, z_g/z_p) < 1.25 (z_p ≤ 0 never counts), mae, rmse; point_rel = mean
    ‖p − g‖/‖g‖; and the scale and shift used. All NaN for an empty mask.
    """
    p = pred_points[mask].astype(np.float64)
    g = gt_points[mask].astype(np.float64)
    if len(p) == 0:
        return dict.fromkeys(VISIBLE_KEYS, float("nan"))
    s, t = align_points_scale_z_shift(p, g)
    q = apply_scale_z_shift(p, s, t)
    zp, zg = q[:, 2], g[:, 2]
    ratio = np.maximum(zp, 1e-12) / zg
    err = zp - zg
    return {
        "abs_rel": float(np.mean(np.abs(err) / zg)),
        "delta1": float(np.mean(np.maximum(ratio, 1.0 / ratio) < 1.25)),
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "point_rel": float(np.mean(np.linalg.norm(q - g, axis=-1) / np.linalg.norm(g, axis=-1))),
        "scale": s,
        "shift": t,
    }


def aligned_depth_metrics(pred_depth: np.ndarray, gt_depth: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Depth alone, aligned by scale and shift (least squares over `mask`), as real-photo depth
    benchmarks score it: abs_rel = mean |z_p − z_g|/z_g and delta1 = share with max(z_p/z_g,
    z_g/z_p) < 1.25 (z_p ≤ 0 never counts). pred_depth, gt_depth: (H, W); mask: (H, W) bool.
    NaN for a mask of fewer than two pixels."""
    p, g = pred_depth[mask].astype(np.float64), gt_depth[mask].astype(np.float64)
    if len(p) < 2:
        return {"abs_rel": float("nan"), "delta1": float("nan")}
    A = np.stack([p, np.ones_like(p)], 1)
    (scale, shift), *_ = np.linalg.lstsq(A, g, rcond=None)
    z = scale * p + shift
    ratio = np.maximum(z, 1e-12) / g
    return {
        "abs_rel": float(np.mean(np.abs(z - g) / g)),
        "delta1": float(np.mean(np.maximum(ratio, 1.0 / ratio) < 1.25)),
    }


def chamfer_fscore(pred: np.ndarray, gt: np.ndarray, thresholds: tuple[float, ...] = (0.01, 0.05)) -> dict[str, float]:
    """Chamfer distances and F-scores between point sets pred (M, 3) and gt (N, 3).

    cd_l1 = ½(mean_p min_g ‖p−g‖ + mean_g min_p ‖g−p‖), cd_l2 the same with squared distances.
    For each threshold τ: precision@τ = share of predicted points closer than τ to gt, recall@τ the
    converse, f@τ = 2PR/(P+R) (0 when both are 0). An empty set gives cd = inf and P = R = F = 0.
    """
    if len(pred) == 0 or len(gt) == 0:
        out = {"cd_l1": float("inf"), "cd_l2": float("inf")}
        for tau in thresholds:
            out |= {f"precision@{tau:g}": 0.0, f"recall@{tau:g}": 0.0, f"f@{tau:g}": 0.0}
        return out
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    d_pred, _ = cKDTree(gt).query(pred, workers=-1)  # (M,)
    d_gt, _ = cKDTree(pred).query(gt, workers=-1)  # (N,)
    out = {
        "cd_l1": float(0.5 * (d_pred.mean() + d_gt.mean())),
        "cd_l2": float(0.5 * (np.mean(d_pred**2) + np.mean(d_gt**2))),
    }
    for tau in thresholds:
        p = float(np.mean(d_pred < tau))
        r = float(np.mean(d_gt < tau))
        out |= {f"precision@{tau:g}": p, f"recall@{tau:g}": r, f"f@{tau:g}": 2 * p * r / (p + r) if p + r > 0 else 0.0}
    return out


def _subsample(points: np.ndarray, max_points: int, rng: np.random.Generator) -> np.ndarray:
    """At most `max_points` rows of points (N, 3), drawn without replacement."""
    if len(points) <= max_points:
        return points
    return points[rng.choice(len(points), max_points, replace=False)]


def evaluate_layered(
    pred_points: np.ndarray,
    pred_valid: np.ndarray,
    gt_points: np.ndarray,
    gt_valid: np.ndarray,
    max_points: int = 20000,
    seed: int = 0,
) -> dict[str, float]:
    """All metrics of one sample, as a flat dict of floats.

    pred_points (Lp, H, W, 3), pred_valid (Lp, H, W); gt_points (Lg, H, W, 3), gt_valid (Lg, H, W).
    Both maps are first divided by the ground truth's size (module docstring); the scale and
    z-shift are solved on layer 0 over pixels valid in both layer 0s and applied to every predicted
    layer. Keys:
      l0_*      visible-surface metrics of aligned layer 0 (`visible_surface_metrics`; l0_scale is
                the unit-free scale, l0_shift the z-shift in units of the object's size);
      all_*     Chamfer / F-score of all valid predicted points;
      layer0_*  the same for predicted layer 0 alone.
    Both predicted sets are compared with the same ground-truth surface samples: all valid points of
    all ground-truth layers, i.e. the surface as traced through every pixel centre (each crossing of
    every pixel's ray), so a prediction is only credited for geometry the ground truth can see along
    those rays. Each point set is randomly subsampled to at most `max_points`. A prediction with no
    layer-0 pixel in common with the ground truth cannot be aligned and counts as empty (l0_* NaN,
    Chamfer inf, F-score 0). Raises ValueError if the ground truth has no extent.
    """
    if pred_points.shape[1:3] != gt_points.shape[1:3]:
        raise ValueError(f"prediction is {pred_points.shape[1:3]} pixels but ground truth is {gt_points.shape[1:3]}")
    gt_all = gt_points[gt_valid].astype(np.float64)  # (N, 3)
    extent = float(np.max(gt_all.max(axis=0) - gt_all.min(axis=0))) if len(gt_all) else 0.0
    if not extent > 0:
        raise ValueError("ground truth needs valid points spanning a non-zero bounding box")
    gt_all /= extent
    common = pred_valid[0] & gt_valid[0]
    visible = visible_surface_metrics(pred_points[0] / extent, gt_points[0] / extent, common)
    keep = pred_valid if common.any() else np.zeros_like(pred_valid)
    s, t = visible["scale"], visible["shift"]
    pred_all = apply_scale_z_shift(pred_points[keep].astype(np.float64) / extent, s, t)
    pred_l0 = apply_scale_z_shift(pred_points[0][keep[0]].astype(np.float64) / extent, s, t)

    rng = np.random.default_rng(seed)
    gt_all = _subsample(gt_all, max_points, rng)
    out = {f"l0_{k}": v for k, v in visible.items()}
    out |= {f"all_{k}": v for k, v in chamfer_fscore(_subsample(pred_all, max_points, rng), gt_all).items()}
    out |= {f"layer0_{k}": v for k, v in chamfer_fscore(_subsample(pred_l0, max_points, rng), gt_all).items()}
    return out


def mean_metrics(rows: list[dict[str, float]]) -> dict[str, float]:
    """Per-key mean over samples, ignoring NaN (NaN where a key has no number); keys in first-seen order."""
    keys = list(dict.fromkeys(k for row in rows for k in row))
    out = {}
    for key in keys:
        values = np.array([row[key] for row in rows if key in row], dtype=np.float64)
        values = values[~np.isnan(values)]
        out[key] = float(values.mean()) if len(values) else float("nan")
    return out


def paired_standard_errors(rows: list[dict[str, float]], reference: str) -> dict[str, float]:
    """Standard error of the mean per-sample difference model − reference, keyed
    `{reference}_{key}_paired_se`, for every key of the model that the reference (keys prefixed
    `{reference}_`) also has. Samples where either is NaN are left out (NaN with fewer than two
    left). A gap between the two means of two such errors or more is unlikely to be noise of the
    samples drawn or of the model's sampling."""
    keys = [k for k in dict.fromkeys(k for row in rows for k in row) if any(f"{reference}_{k}" in r for r in rows)]
    out = {}
    for key in keys:
        diff = np.array([row.get(key, np.nan) - row.get(f"{reference}_{key}", np.nan) for row in rows])
        diff = diff[~np.isnan(diff)]
        out[f"{reference}_{key}_paired_se"] = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else np.nan
    return out
