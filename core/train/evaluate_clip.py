"""Held-out evaluation of dynamic mode on clips the torch stream draws with a fixed seed (or on clip
shards the Blender engine rendered): the metrics of DESIGN.md §6 on every frame, and temporal
stability, always beside the per-frame floor.

Models run at their own resolution on the clip's frames with the true foreground, as `evaluate_model`
does for images. The per-frame floor is a single-image model (the shipped object model) tracing
every frame on its own, each frame scaled to agree with the one before (as `core.clip` does for it);
silhouette inflation of each frame's mask and a perfect depth map (each frame's true layer 0) stand
beside them.

Stability is measured on still clips (nothing moves; the frames differ by sensor noise only): the
clip's visible surfaces are aligned to the truth with one scale and z-shift for all frames, and
`stability` is the mean distance between the visible points of consecutive frames (pixels valid in
both), in units of the object's size — 0 for a perfectly steady prediction.
Axes: T frames, L layers, H×W pixels.
"""

from __future__ import annotations

import os

import numpy as np

from ..clip import scale_to
from ..data.recipe import HELD_OUT_FAMILIES, TRAIN_FAMILIES
from ..data.shards import ShardReader
from ..data.stream import SceneStream, StreamConfig
from ..geometry.alignment import align_points_scale_z_shift
from ..geometry.points import PointNormalization
from ..inference import predict
from ..model.wtdit import WTDiT
from ..plots import colorize, image_grid
from ..sampling import SampleConfig
from .evaluate import reference_predictions, sample_metrics
from .metrics import mean_metrics

SPLITS = {"seen": TRAIN_FAMILIES, "unseen": HELD_OUT_FAMILIES}
HEADLINE = (  # (key, label, better)
    ("l0_abs_rel", "layer-0 AbsRel", "↓"),
    ("all_cd_l1", "Chamfer-L1, all layers", "↓"),
    ("all_f@0.01", "F@0.01, all layers", "↑"),
    ("all_f@0.05", "F@0.05, all layers", "↑"),
    ("stability", "frame-to-frame change, still clips", "↓"),
)


def eval_clips(count: int, frames: int, seed: int, split: str, layers: int) -> list[tuple[dict, bool]]:
    """`count` clips of `frames` frames drawn by the stream from `split`'s families ("seen": the
    training families, "unseen": the held-out ones), as (`SceneStream.batch(1)` dict, still) pairs: the
    first half still (motion "static", from `seed`), the rest moving as the training clips do (`seed` + 1)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    still, moving = count // 2, count - count // 2
    clips = []
    for n, motion, offset in ((still, "static", 0), (moving, None, 1)):
        stream = SceneStream(
            StreamConfig(layers=layers, families=SPLITS[split], frames=frames, motion=motion), seed=seed + offset
        )
        clips += [(stream.batch(1), motion == "static") for _ in range(n)]
    return clips


def shard_clips(folder: str | os.PathLike, count: int, layers: int) -> list[tuple[dict, bool]]:
    """The first `count` clips of a folder of clip shards (`generate --frames T`: rendered by Cycles,
    not by the stream the models train on), as `eval_clips` gives them; still: motion "static"."""
    reader = ShardReader(folder)
    if reader.frames == 1:
        raise ValueError(f"{folder} holds single images: make clips with `python -m core generate --frames T`")
    if reader.num_layers < layers:
        raise ValueError(f"{folder} keeps {reader.num_layers} layers; the models predict {layers}")
    motions = [sample["motion"] for shard in reader.meta for sample in shard["samples"]]
    return [(reader.batch([i], layers), motions[i] == "static") for i in range(min(count, len(reader)))]


def stability(points: np.ndarray, valid: np.ndarray, gt_points: np.ndarray, gt_valid: np.ndarray) -> float:
    """Mean distance between the visible points of consecutive frames after one alignment of the whole
    clip to the truth, in units of the truth's size. points (T, L, H, W, 3), valid (T, L, H, W)."""
    common = valid[:, 0] & gt_valid[:, 0]
    if not common.any():
        return float("nan")
    gt_all = gt_points[gt_valid]
    extent = float(np.max(gt_all.max(0) - gt_all.min(0)))
    s, t = align_points_scale_z_shift(points[:, 0][common], gt_points[:, 0][common])
    aligned = points[:, 0].astype(np.float64) * s
    aligned[..., 2] += t
    both = valid[1:, 0] & valid[:-1, 0]
    if not both.any():
        return float("nan")
    return float(np.linalg.norm(aligned[1:] - aligned[:-1], axis=-1)[both].mean() / extent)


def per_frame_prediction(
    model: WTDiT, normalization: PointNormalization, clip: dict, cfg: SampleConfig, seed: int, one_seed: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """The per-frame floor: a single-image model on every frame alone, from `seed` (as `trace_clip`
    does) or, unless `one_seed`, frame k from seed + k; each frame scaled to agree with the one before.
    Returns points (T, L, H, W, 3), valid (T, L, H, W)."""
    image, foreground = clip["image"][0], clip["foreground"][0]
    if one_seed:
        preds = [
            predict(model, normalization, image[t : t + 1], foreground[t : t + 1], cfg, seed) for t in range(len(image))
        ]
    else:
        preds = [predict(model, normalization, image, foreground, cfg, seed)]
    points = np.concatenate([p.points.cpu().numpy() for p in preds])
    valid = np.concatenate([p.valid.cpu().numpy() for p in preds])
    for k in range(1, len(points)):
        points[k] *= scale_to(points[k, 0], valid[k, 0], points[k - 1, 0], valid[k - 1, 0])
    return points, valid


def clip_prediction(
    model: WTDiT, normalization: PointNormalization, clip: dict, cfg: SampleConfig, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """A temporal model on the whole clip at once. Returns points (T, L, H, W, 3), valid (T, L, H, W)."""
    pred = predict(model, normalization, clip["image"], clip["foreground"], cfg, seed)
    T, L = clip["image"].shape[1], model.cfg.num_layers
    return pred.points[0].cpu().numpy().reshape(T, L, *pred.points.shape[2:]), pred.valid[0].cpu().numpy().reshape(
        T, L, *pred.valid.shape[2:]
    )


Predictor = tuple[WTDiT, PointNormalization, SampleConfig, bool]  # model, units, sampler, one seed per clip


def evaluate_clips(
    predictors: dict[str, Predictor],
    clips: list[tuple[dict, bool]],
    seed: int = 0,
    max_points: int = 20000,
) -> dict[str, float]:
    """Mean metrics over clips and frames of every named predictor (a temporal model runs on whole
    clips; a single-image model frame by frame, from one seed or a seed per frame), of `inflation_`
    and `oracle_` (`reference_predictions`, frame by frame) and, over the still clips,
    `<name>_stability` (module docstring). Keys: `<name>_<metric>`. clips: `eval_clips`' pairs."""
    rows: list[dict[str, float]] = []
    still: list[dict[str, float]] = []
    for k, (clip, is_still) in enumerate(clips):
        gt_points, gt_valid = clip_truth(clip)
        predictions = clip_predictions(predictors, clip, seed + 100 * k)
        for t in range(len(gt_points)):
            row: dict[str, float] = {}
            for name, (points, valid) in predictions.items():
                metrics = sample_metrics(points[t], valid[t], gt_points[t], gt_valid[t], max_points)
                row |= {f"{name}_{key}": value for key, value in metrics.items()}
            rows.append(row)
        if is_still:
            still.append(
                {f"{name}_stability": stability(p, v, gt_points, gt_valid) for name, (p, v) in predictions.items()}
            )
    return mean_metrics(rows) | mean_metrics(still)


def clip_truth(clip: dict) -> tuple[np.ndarray, np.ndarray]:
    """A streamed clip's true points (T, L, H, W, 3) and validity (T, L, H, W)."""
    T = clip["image"].shape[1]
    return (
        clip["points"][0].numpy().reshape(T, -1, *clip["points"].shape[2:]),
        clip["valid"][0].numpy().reshape(T, -1, *clip["valid"].shape[2:]),
    )


def clip_predictions(
    predictors: dict[str, Predictor], clip: dict, seed: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{name: (points (T, L, H, W, 3), valid (T, L, H, W))} of every predictor on one clip, then of the
    references (`inflation`, `oracle`), frame by frame."""
    predictions = {}
    for name, (model, normalization, cfg, one_seed) in predictors.items():
        if model.cfg.temporal:
            predictions[name] = clip_prediction(model, normalization, clip, cfg, seed)
        else:
            predictions[name] = per_frame_prediction(model, normalization, clip, cfg, seed, one_seed)
    gt_points, gt_valid = clip_truth(clip)
    intrinsics = clip["intrinsics"][0].numpy()
    references = [reference_predictions(p, v, intrinsics) for p, v in zip(gt_points, gt_valid, strict=True)]
    for ref in references[0]:
        predictions[ref] = (np.stack([r[ref][0] for r in references]), np.stack([r[ref][1] for r in references]))
    return predictions


def clip_figure(predictors: dict[str, Predictor], clips: list[dict], path: str | os.PathLike, seed: int = 0) -> None:
    """PNG: for each clip its frames, then per predictor (and the truth) the depth of layers 0 and 1 in
    every frame, each prediction aligned to the truth by one scale and z-shift for the whole clip (as
    `stability` is), on the truth's colour scale, cropped to the object."""
    rows, labels = [], []
    for k, clip in enumerate(clips):
        gt_points, gt_valid = clip_truth(clip)
        T = len(gt_points)
        predictions = clip_predictions(predictors, clip, seed + 100 * k)
        shown = {name: predictions[name] for name in predictors} | {"truth": (gt_points, gt_valid)}
        ys, xs = np.nonzero(gt_valid[:, 0].any(axis=0))
        crop = np.s_[max(ys.min() - 4, 0) : ys.max() + 5, max(xs.min() - 4, 0) : xs.max() + 5]
        z = gt_points[..., 2][gt_valid]
        lo, hi = float(z.min()), float(z.max())
        frames = [(clip["image"][0, t].permute(1, 2, 0).numpy() * 255).astype(np.uint8)[crop] for t in range(T)]
        rows.append(frames + [np.full_like(frames[0], 255)] * T)
        labels.append(f"clip {k + 1}")
        for name, (points, valid) in shown.items():
            common = valid[:, 0] & gt_valid[:, 0]
            s, t = align_points_scale_z_shift(points[:, 0][common], gt_points[:, 0][common]) if common.any() else (1, 0)
            depth = points[..., 2] * s + t
            rows.append(
                [colorize(depth[f, layer][crop], valid[f, layer][crop], lo, hi) for layer in (0, 1) for f in range(T)]
            )
            labels.append({"per-frame, seed per frame": "seed/frame"}.get(name, name)[:11])
    columns = [f"L{layer} f{f + 1}" for layer in (0, 1) for f in range(T)]
    image_grid(rows, columns, labels, tile=96).save(path)


def clip_table(metrics: dict[str, float], names: list[str]) -> str:
    """A Markdown table of the headline metrics: the named predictors, then inflation and a perfect depth map."""
    columns = [*names, "inflation", "oracle"]
    labels = [*names, "silhouette inflation", "perfect depth map"]
    lines = ["| metric | " + " | ".join(labels) + " |", "|---" * (len(columns) + 1) + "|"]
    for key, label, better in HEADLINE:
        values = [metrics.get(f"{c}_{key}", float("nan")) for c in columns]
        lines.append(f"| {label} {better} | " + " | ".join("–" if np.isnan(v) else f"{v:.4f}" for v in values) + " |")
    return "\n".join(lines)
