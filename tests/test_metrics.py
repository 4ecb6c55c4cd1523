"""Tests for core.train.metrics and core.geometry.alignment: alignment, Chamfer / F-score, and the
per-sample layered evaluation."""

import math

import numpy as np
import pytest
import torch

from core.geometry.alignment import align_points_scale_z_shift, apply_scale_z_shift
from core.train.metrics import (
    chamfer_fscore,
    evaluate_layered,
    mean_metrics,
    paired_standard_errors,
    visible_surface_metrics,
)


def pixel_rays(size: int = 40, focal: float = 45.0) -> np.ndarray:
    """(H, W, 3) rays (x/z, y/z, 1) through pixel centres of a square pinhole image."""
    v, u = np.mgrid[0:size, 0:size] + 0.5
    return np.stack([(u - size / 2) / focal, (v - size / 2) / focal, np.ones((size, size))], axis=-1)


def sphere_layers(centre=(0.1, -0.05, 3.0), radius: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Two-layer map of a sphere: entry (front) and exit (back) points of every pixel ray.

    Returns points (2, H, W, 3) float32 (zeros where invalid) and valid (2, H, W) bool.
    """
    d = pixel_rays()
    d = d / np.linalg.norm(d, axis=-1, keepdims=True)
    c = np.asarray(centre)
    b = d @ c  # ray length to the closest approach
    disc = b**2 - c @ c + radius**2
    hit = disc > 0
    root = np.sqrt(np.maximum(disc, 0.0))
    points = np.stack([(b - root)[..., None] * d, (b + root)[..., None] * d])
    valid = np.stack([hit, hit])
    return np.where(valid[..., None], points, 0.0).astype(np.float32), valid


def test_align_recovers_known_scale_and_z_shift():
    """A prediction that is the ground truth under 1/s and −t yields exactly (s, t) back."""
    g = np.random.default_rng(1).normal(size=(500, 3)) + [0.0, 0.0, 4.0]
    s, t = 2.5, -0.7
    p = g.copy()
    p[:, 2] -= t
    p /= s
    s_hat, t_hat = align_points_scale_z_shift(p, g)
    assert s_hat == pytest.approx(s, abs=1e-10)
    assert t_hat == pytest.approx(t, abs=1e-10)
    np.testing.assert_allclose(apply_scale_z_shift(p, s_hat, t_hat), g, atol=1e-10)


def test_apply_scale_z_shift_scales_xyz_and_shifts_only_z():
    """s·p + t·e_z on any leading shape."""
    p = np.array([[[1.0, -2.0, 3.0]]])
    np.testing.assert_allclose(apply_scale_z_shift(p, 2.0, 0.5), [[[2.0, -4.0, 6.5]]])


def test_visible_surface_metrics_zero_error_after_alignment():
    """A scaled and z-shifted copy of the ground truth has zero depth error and reports the inverse transform."""
    gt, valid = sphere_layers()
    pred = apply_scale_z_shift(gt[0], 0.5, 1.0)
    m = visible_surface_metrics(pred, gt[0], valid[0])
    assert m["scale"] == pytest.approx(2.0, rel=1e-6)
    assert m["shift"] == pytest.approx(-2.0, rel=1e-6)
    for key in ("abs_rel", "mae", "rmse", "point_rel"):
        assert m[key] == pytest.approx(0.0, abs=1e-6)
    assert m["delta1"] == 1.0


def test_identical_sets_give_zero_chamfer_and_unit_fscore():
    """Chamfer 0 and precision = recall = F = 1 at every threshold for identical sets."""
    x = np.random.default_rng(0).uniform(size=(300, 3))
    m = chamfer_fscore(x, x)
    assert m["cd_l1"] == 0.0 and m["cd_l2"] == 0.0
    for tau in ("0.01", "0.05"):
        assert m[f"f@{tau}"] == m[f"precision@{tau}"] == m[f"recall@{tau}"] == 1.0


def test_chamfer_of_two_points_offset_by_known_distance():
    """Two points vs the same two moved 0.3 in z: cd_l1 = 0.3, cd_l2 = 0.09, F = 1 only above 0.3."""
    pred = np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0]])
    m = chamfer_fscore(pred, pred + [0.0, 0.0, 0.3], thresholds=(0.1, 0.5))
    assert m["cd_l1"] == pytest.approx(0.3)
    assert m["cd_l2"] == pytest.approx(0.09)
    assert m["f@0.1"] == 0.0
    assert m["f@0.5"] == 1.0


def test_chamfer_is_asymmetric_in_precision_and_recall():
    """One predicted point on one of two GT points: P = 1, R = ½, F = ⅔; cd_l1 = ½(0 + 1), cd_l2 = ½(0 + 2)."""
    m = chamfer_fscore(np.zeros((1, 3)), np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 2.0]]), thresholds=(0.5,))
    assert m["precision@0.5"] == 1.0
    assert m["recall@0.5"] == 0.5
    assert m["f@0.5"] == pytest.approx(2 / 3)
    assert m["cd_l1"] == pytest.approx(0.5)
    assert m["cd_l2"] == pytest.approx(1.0)


def test_fscore_counts_offset_of_two_percent_at_five_not_one():
    """A unit-sized plane shifted by 0.02 scores F = 1 at 0.05 and F = 0 at 0.01."""
    u, v = np.mgrid[0:21, 0:21] / 20.0
    gt = np.stack([u.ravel(), v.ravel(), np.zeros(u.size)], axis=-1)
    m = chamfer_fscore(gt + [0.0, 0.0, 0.02], gt)
    assert m["cd_l1"] == pytest.approx(0.02)
    assert m["f@0.05"] == 1.0
    assert m["f@0.01"] == 0.0


def test_evaluate_measures_distances_in_object_size():
    """Back layer pushed 2% of the GT bounding box's largest side: half the points fail at 0.01, all pass at 0.05."""
    rays = pixel_rays(size=16)
    gt = np.stack([2.0 * rays, 3.0 * rays]).astype(np.float32)  # two fronto-parallel planes
    valid = np.ones(gt.shape[:3], dtype=bool)
    extent = np.max(gt.reshape(-1, 3).max(0) - gt.reshape(-1, 3).min(0))
    pred = gt.copy()
    pred[1, ..., 2] += 0.02 * extent
    m = evaluate_layered(pred, valid, gt, valid)
    assert m["l0_scale"] == pytest.approx(1.0, rel=1e-6)
    assert m["all_cd_l1"] == pytest.approx(0.01, rel=1e-4)  # half the points at 0.02, both directions
    assert m["all_precision@0.01"] == m["all_recall@0.01"] == m["all_f@0.01"] == 0.5
    assert m["all_f@0.05"] == 1.0


def test_evaluate_perfect_all_layer_prediction_scores_perfectly():
    """Prediction = GT (with an extra empty layer): zero errors, F = 1; layer 0 alone is less complete."""
    gt, valid = sphere_layers()
    pred = np.concatenate([gt, np.zeros_like(gt[:1])])
    pred_valid = np.concatenate([valid, np.zeros_like(valid[:1])])
    m = evaluate_layered(pred, pred_valid, gt, valid)
    assert all(isinstance(v, float) for v in m.values())
    for key in ("l0_abs_rel", "l0_mae", "l0_rmse", "l0_point_rel", "all_cd_l1", "all_cd_l2"):
        assert m[key] == pytest.approx(0.0, abs=1e-6)
    assert m["l0_delta1"] == 1.0
    assert m["all_f@0.01"] == m["all_f@0.05"] == 1.0
    assert m["layer0_cd_l1"] > m["all_cd_l1"] + 0.01
    assert m["layer0_f@0.01"] < m["all_f@0.01"] - 0.2
    assert m["layer0_precision@0.01"] == 1.0  # what layer 0 predicts is right, it just misses the back


def test_evaluate_oracle_depth_map_with_one_layer():
    """GT layer 0 alone (L = 1) is perfect on the visible surface but recalls only part of the full surface."""
    gt, valid = sphere_layers()
    m = evaluate_layered(gt[:1], valid[:1], gt, valid)
    assert m["l0_abs_rel"] == pytest.approx(0.0, abs=1e-6)
    assert m["all_cd_l1"] == m["layer0_cd_l1"] > 0.01
    assert m["all_precision@0.05"] == 1.0
    assert 0.0 < m["all_recall@0.05"] < 1.0


def test_evaluate_is_invariant_to_global_scale_and_z_shift_of_prediction():
    """Scaling and z-shifting a noisy prediction leaves every metric but l0_scale/l0_shift unchanged."""
    gt, valid = sphere_layers()
    noise = np.random.default_rng(2).normal(scale=0.02, size=gt.shape).astype(np.float32)
    pred = np.where(valid[..., None], gt + noise, 0.0).astype(np.float32)
    base = evaluate_layered(pred, valid, gt, valid, max_points=1000)
    moved = evaluate_layered(apply_scale_z_shift(pred, 3.0, 0.8), valid, gt, valid, max_points=1000)
    assert base["all_f@0.05"] < 1.0 and base["l0_abs_rel"] > 0.0  # not trivially perfect
    assert moved["l0_scale"] == pytest.approx(base["l0_scale"] / 3.0, rel=1e-5)
    assert moved["l0_shift"] != pytest.approx(base["l0_shift"], abs=1e-3)
    for key in base.keys() - {"l0_scale", "l0_shift"}:
        assert moved[key] == pytest.approx(base[key], rel=1e-4, abs=1e-7), key


def test_evaluate_is_invariant_to_the_scene_unit():
    """Expressing prediction and GT in another unit (×10) changes no metric."""
    gt, valid = sphere_layers()
    pred = np.where(valid[..., None], gt * [1.0, 1.0, 1.02], 0.0).astype(np.float32)
    base = evaluate_layered(pred, valid, gt, valid)
    other = evaluate_layered(10 * pred, valid, 10 * gt, valid)
    for key in base:
        assert other[key] == pytest.approx(base[key], rel=1e-4, abs=1e-7), key


def test_empty_prediction_does_not_crash():
    """No predicted points: Chamfer inf, F 0, visible metrics NaN."""
    gt, valid = sphere_layers()
    m = chamfer_fscore(np.zeros((0, 3)), gt[valid])
    assert m["cd_l1"] == m["cd_l2"] == math.inf and m["f@0.01"] == m["recall@0.05"] == 0.0
    e = evaluate_layered(np.zeros_like(gt), np.zeros_like(valid), gt, valid)
    assert e["all_cd_l1"] == e["layer0_cd_l2"] == math.inf
    assert e["all_f@0.05"] == e["layer0_f@0.01"] == 0.0
    assert math.isnan(e["l0_abs_rel"])


def test_evaluate_subsamples_to_max_points_deterministically():
    """Subsampling repeats exactly for a fixed seed and draws other points for another seed."""
    gt, valid = sphere_layers()
    pred = np.where(valid[..., None], gt * [1.0, 1.0, 1.02], 0.0).astype(np.float32)
    a = evaluate_layered(pred, valid, gt, valid, max_points=500, seed=3)
    assert a == evaluate_layered(pred, valid, gt, valid, max_points=500, seed=3)
    assert a["all_cd_l1"] != evaluate_layered(pred, valid, gt, valid, max_points=500, seed=4)["all_cd_l1"]
    assert a["all_cd_l1"] != evaluate_layered(pred, valid, gt, valid)["all_cd_l1"]


def test_mean_metrics_ignores_nan():
    """Per-key means skip NaN; a key that is NaN everywhere stays NaN."""
    rows = [{"a": 1.0, "b": float("nan"), "c": float("nan")}, {"a": 3.0, "b": 2.0, "c": float("nan")}]
    m = mean_metrics(rows)
    assert m["a"] == 2.0 and m["b"] == 2.0 and math.isnan(m["c"])


def test_paired_standard_error_measures_the_spread_of_the_per_sample_gap():
    """The gap's standard error: zero when the model is the floor shifted by a constant, the standard
    deviation of the gaps over √n otherwise; samples with a NaN on either side and keys the floor
    lacks are left out."""
    rng = np.random.default_rng(0)
    floor = rng.uniform(0.05, 0.1, 50)
    shifted = [{"l0_abs_rel": f - 0.01, "inflation_l0_abs_rel": f, "steps": 20.0} for f in floor]
    assert paired_standard_errors(shifted, "inflation") == pytest.approx({"inflation_l0_abs_rel_paired_se": 0.0})
    gaps = rng.normal(-0.01, 0.02, 50)
    rows = [{"l0_abs_rel": f + g, "inflation_l0_abs_rel": f} for f, g in zip(floor, gaps, strict=True)]
    rows.append({"l0_abs_rel": float("nan"), "inflation_l0_abs_rel": 0.07})
    se = paired_standard_errors(rows, "inflation")["inflation_l0_abs_rel_paired_se"]
    assert se == pytest.approx(np.std(gaps, ddof=1) / math.sqrt(50))
    assert 0.5 * 0.02 / math.sqrt(50) < se < 2 * 0.02 / math.sqrt(50)


def test_silhouette_inflation_of_a_disk_is_a_round_solid():
    """A disk mask inflates to a closed round solid: both layers on every foreground pixel, depth 2 ∓ o
    with o = r/f·2 at the centre and almost 0 at the rim, front before back, nothing outside."""
    from core.train.baselines import silhouette_inflation

    H = W = 64
    v, u = np.mgrid[0:H, 0:W] + 0.5
    disk = np.hypot(u - 32, v - 32) < 20
    points, valid, K = silhouette_inflation(disk)
    assert valid.shape == (2, H, W) and (valid == disk).all()
    f = K[0, 0]
    assert f == pytest.approx(W / 2 / math.tan(math.radians(27)))
    r = 20.0
    z = points[..., 2]
    o = r / f * 2
    assert z[0, 32, 32] == pytest.approx(2 - o, rel=0.05) and z[1, 32, 32] == pytest.approx(2 + o, rel=0.05)
    rim = disk & ~np.roll(disk, 1, 0)
    assert np.abs(z[:, rim] - 2).max() < 0.5 * o
    assert (z[0][disk] < z[1][disk]).all() and not points[:, ~disk].any()


def test_comparison_table_puts_the_model_beside_both_references():
    """The headline table has the model, silhouette inflation and a perfect depth map side by side."""
    from core.train.evaluate import comparison_table

    metrics = {"l0_abs_rel": 0.1, "inflation_l0_abs_rel": 0.2, "oracle_l0_abs_rel": 0.0}
    table = comparison_table(metrics, "tiny")
    header, _, first = table.splitlines()[:3]
    assert "tiny" in header and "silhouette inflation" in header and "perfect depth map" in header
    assert first.split("|")[2:5] == [" 0.1000 ", " 0.2000 ", " 0.0000 "]
    assert header.split("|")[5].strip() == "model − silhouette inflation (no learning)"
    assert first.split("|")[5].strip() == "-0.1000"
    metrics["inflation_l0_abs_rel_paired_se"] = 0.02
    assert comparison_table(metrics, "tiny").splitlines()[2].split("|")[5].strip() == "-0.1000 ± 0.0400"


def test_scene_comparison_table_puts_the_model_beside_both_scene_floors():
    """Scene data's table: the model, a constant depth, the best row ramp and a perfect depth map, led by
    the visible depth scored alone."""
    from core.train.evaluate import comparison_table

    metrics = {"depth_abs_rel": 0.1, "constant_depth_abs_rel": 0.4, "ramp_depth_abs_rel": 0.3}
    metrics["oracle_depth_abs_rel"] = 0.0
    header, _, first = comparison_table(metrics, "scene-tiny", "scene").splitlines()[:3]
    assert "scene-tiny" in header and "constant depth" in header and "row" in header and "perfect" in header
    assert first.split("|")[2:6] == [" 0.1000 ", " 0.4000 ", " 0.3000 ", " 0.0000 "]


def test_distance_transform_is_exact_on_random_masks():
    """The torch distance transform (border candidates only) equals the brute-force nearest-background
    distance on blobby random masks, and measures to the frame's outside when there is no background."""
    from core.geometry.silhouette import distance_to_background

    rng = np.random.default_rng(0)
    masks = []
    for _ in range(3):
        noise = rng.random((40, 48)) < 0.55
        masks.append(noise | np.roll(noise, 1, 0))
    fg = torch.from_numpy(np.stack(masks))
    d = distance_to_background(fg).numpy()
    for b, mask in enumerate(masks):
        fy, fx = np.nonzero(mask)
        by, bx = np.nonzero(~mask)
        brute = np.sqrt((fy[:, None] - by[None]) ** 2 + (fx[:, None] - bx[None]) ** 2).min(1)
        assert np.allclose(d[b][mask], brute, atol=1e-4) and not d[b][~mask].any()
    full = distance_to_background(torch.ones(1, 5, 7, dtype=torch.bool))[0]
    assert full[2, 3] == 3 and full[0, 0] == 1


def test_placed_inflation_recovers_an_inflated_front_from_its_own_points():
    """Given the front of an inflated mask (any focal length, any depth) as the reference, the placed
    inflation finds that focal length and depth again; a reference twice as far gives a front twice as far."""
    from core.geometry.silhouette import inflate, placed_inflation

    yy, xx = torch.meshgrid(torch.arange(48), torch.arange(64), indexing="ij")
    mask = (((yy - 20) / 14.0) ** 2 + ((xx - 30) / 20.0) ** 2 < 1)[None]
    for focal, depth in ((40.0, 1.5), (150.0, 4.0)):
        front = inflate(mask, focal, depth, 1)[:, 0]  # [1, H, W, 3]
        torch.testing.assert_close(placed_inflation(mask, front), front, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(placed_inflation(mask, 2 * front), 2 * front, atol=1e-4, rtol=1e-4)
    assert not placed_inflation(mask, front)[~mask].any()
