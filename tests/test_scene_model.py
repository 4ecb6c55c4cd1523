"""Scene mode's own model: the DepthNet the anchor takes the visible depth from, its trainer, the
scene floors it is measured against, and the shipped scene checkpoint."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from conftest import DATA, small_config, train_anchor_net, write_corner_shards
from PIL import Image

from core.assets import SHIPPED_CHECKPOINTS, default_checkpoint
from core.data.shards import ShardReader
from core.geometry.placement import fitted_focal, placed_depth
from core.geometry.points import PointNormalization, pixel_rays
from core.inference import predict, trace_image
from core.model.checkpoint import read_metadata, save_checkpoint
from core.model.loading import load_model
from core.model.surface import DepthNet
from core.model.wtdit import WTDiT
from core.sampling import SampleConfig
from core.train.baselines import scene_floors
from core.train.evaluate import comparison_table, evaluate_model
from core.train.metrics import aligned_depth_metrics
from core.train.surface import surface_batch, surface_error

SCENE = SHIPPED_CHECKPOINTS["scene"]


def corner_truth(resolution: int = 32):
    """(points [1, R, R, 3], K [1, 3, 3]) of the first sample of `write_corner_shards`-like data."""
    f = resolution / (2 * np.tan(np.radians(30)))
    K = torch.tensor([[[f, 0, resolution / 2], [0, f, resolution / 2], [0, 0, 1]]], dtype=torch.float32)
    rays = pixel_rays(K, resolution, resolution)  # [1, R, R, 3]
    floor = torch.where(rays[..., 1] > 1e-6, 1.5 / rays[..., 1].clamp_min(1e-6), torch.tensor(float("inf")))
    return rays * floor.clamp(max=5.0)[..., None], K


def test_depth_alone_is_scored_after_a_scale_and_shift_fit():
    """Any positive affine map of the true depth scores perfectly; a flat guess does not."""
    z = np.random.default_rng(0).uniform(1, 10, (16, 16))
    mask = np.ones_like(z, bool)
    perfect = aligned_depth_metrics(0.3 * z + 2.0, z, mask)
    assert perfect["abs_rel"] == pytest.approx(0, abs=1e-9) and perfect["delta1"] == 1.0
    flat = aligned_depth_metrics(np.full_like(z, 4.0), z, mask)
    assert flat["abs_rel"] > 0.2 and flat["delta1"] < 1.0
    assert np.isnan(aligned_depth_metrics(z, z, np.zeros_like(mask))["abs_rel"])


def test_scene_floors_are_a_constant_and_the_best_row_ramp_on_the_true_rays():
    """A truth whose depth is linear in the row is the ramp floor exactly; the constant floor is its
    median depth. Both lie on the true camera's rays, on the visible pixels only."""
    H = W = 16
    K = np.array([[12.0, 0, 8], [0, 12.0, 8], [0, 0, 1]], np.float32)
    rays = pixel_rays(torch.from_numpy(K), H, W).numpy()
    depth = 2.0 + 0.25 * (H - np.arange(H))[:, None] * np.ones((1, W))  # farther toward the top
    valid = np.ones((2, H, W), bool)
    valid[:, :3, :4] = False  # a window: sky
    points = (rays * depth[..., None])[None].repeat(2, 0) * valid[..., None]
    floors = scene_floors(points.astype(np.float32), valid, K)
    ramp, ramp_valid = floors["ramp"]
    np.testing.assert_array_equal(ramp_valid[0], valid[0])
    np.testing.assert_allclose(ramp[0][valid[0]], points[0][valid[0]], rtol=1e-4)
    constant, _ = floors["constant"]
    np.testing.assert_allclose(constant[0][valid[0]], rays[valid[0]] * np.median(depth[valid[0]]), rtol=1e-5)
    assert not constant[0][~valid[0]].any() and not ramp[0][~valid[0]].any()


def test_an_untrained_depth_net_is_a_constant_depth_placed_like_the_reference():
    """The DepthNet's last convolution starts at zero (log-depth 0 on the foreground); `placed_depth`
    puts a depth on the rays of the reference's fitted camera at the reference's median depth, so the
    true log-depth up to a constant rebuilds the truth exactly."""
    truth, K = corner_truth()
    foreground = torch.ones(1, 32, 32, dtype=torch.bool)
    foreground[:, :4, :6] = False
    log_depth = DepthNet(8)(torch.rand(1, 3, 32, 32), foreground)
    assert (log_depth == 0).all()
    torch.testing.assert_close(fitted_focal(foreground, truth), K[:, 0, 0])
    rebuilt = placed_depth(foreground, truth, torch.log(truth[..., 2]) + 3.0)
    torch.testing.assert_close(rebuilt[foreground], truth[foreground], rtol=1e-4, atol=1e-5)
    assert (rebuilt[~foreground] == 0).all()
    flat = placed_depth(foreground, truth, log_depth)[..., 2][foreground]
    torch.testing.assert_close(flat, torch.full_like(flat, float(truth[..., 2][foreground].median())))


@pytest.fixture()
def scene_checkpoint(tmp_path):
    """A seeded small scene model (log-median points) without a DepthNet."""
    torch.manual_seed(0)
    model = WTDiT(small_config())
    torch.nn.init.normal_(model.head.out.weight, std=0.05)
    path = tmp_path / "scene.safetensors"
    save_checkpoint(path, model.state_dict(), model.cfg, PointNormalization("log_median"), {"name": "random scene"})
    return path


def test_training_the_depth_net_learns_room_corners(scene_checkpoint, tmp_path):
    """train-surface on a scene model grows a DepthNet (the rest kept), brings the held-out visible
    error well below a constant depth's, records the stretch, and the model then anchors."""
    data = write_corner_shards(tmp_path / "train", 32)
    val = write_corner_shards(tmp_path / "val", 8, seed=1)
    _, model, card = train_anchor_net(scene_checkpoint, data, val, tmp_path / "depth.safetensors", 80, 40)
    assert model.cfg.depth_width == 8 and model.depth is not None and model.surface is None
    (record,) = card.info["surface"]
    end = record["validation"][-1]
    assert end["abs_rel"] < 0.5 * end["constant depth"], record["validation"]
    assert card.mode == "scene" and card.anchor is not None
    with torch.no_grad():
        error = surface_error(model, surface_batch(ShardReader(val), list(range(8)))).mean()
    assert float(error) == pytest.approx(end["abs_rel"], abs=1e-5)  # the record is the saved net's


@torch.no_grad()
def test_scene_mode_anchors_the_visible_layer_on_the_depth_net_only(scene_checkpoint):
    """Anchored at 0, a scene model with a DepthNet ends layer 0 on the net's depth (z ∝ e^log-depth);
    the same model without one ignores the anchor in scene mode."""
    model, normalization, _ = load_model(scene_checkpoint)
    deep = WTDiT(dataclasses.replace(model.cfg, depth_width=8)).eval()
    deep.load_state_dict(model.state_dict(), strict=False)
    assert deep.depth is not None
    torch.nn.init.normal_(deep.depth.out.weight, std=0.3)
    image, foreground = torch.rand(1, 3, 32, 32), torch.ones(1, 32, 32, dtype=torch.bool)
    layer0 = predict(deep, normalization, image, foreground, SampleConfig(steps=3, anchor=0.0), seed=2).points[0, 0]
    ratio = layer0[..., 2] / torch.exp(deep.depth(image, foreground))[0]
    assert float(ratio.std() / ratio.mean()) < 1e-4
    rgba = np.asarray(Image.open(DATA / "object_rgba.png").convert("RGBA")).copy()
    rgba[..., 3] = 255
    for net, differs in ((model, False), (deep, True)):
        plain, anchored = (
            trace_image(
                net, normalization, rgba, "scene", SampleConfig(steps=2, anchor=a), seed=1, edge_filter_strength=0
            )
            for a in (None, 0.0)
        )
        assert (not np.array_equal(plain.points, anchored.points)) == differs


def test_scene_mode_uses_the_shipped_scene_model():
    """Without --checkpoint each mode takes its own shipped model: a scene model (log-median points, a
    DepthNet, anchored) trained and recorded here, within the size budget."""
    assert default_checkpoint("scene") == SCENE and default_checkpoint("object") != SCENE
    model, _, card = load_model(SCENE, "cpu")
    assert card.mode == "scene" and model.depth is not None and card.anchor is not None
    info = json.loads(read_metadata(SCENE)["info"])
    assert info["command"].startswith("python -m core train") and info["train_config"]["normalization"] == "log_median"
    stretches = info["surface"]
    assert stretches and all(
        r["command"].startswith("python -m core train-surface") and r["steps"] > 0 for r in stretches
    )
    assert SCENE.stat().st_size < 50 * 2**20


@pytest.mark.slow
def test_shipped_scene_model_beats_both_scene_floors():
    """On the 16 rooms and streets of tests/data/scene (a seed the training never drew), the shipped scene
    model as it samples by default has visible depth closer to the truth than a constant depth and than
    the best row ramp, in AbsRel and δ1 after a scale-and-shift fit."""
    model, normalization, card = load_model(SCENE, "cpu")
    reader = ShardReader(DATA / "scene")
    metrics = evaluate_model(model, normalization, reader, list(range(16)), card.sample_config(steps=10))
    print(comparison_table(metrics, "shipped", "scene"))
    for floor in ("constant", "ramp"):
        assert metrics["depth_abs_rel"] < metrics[f"{floor}_depth_abs_rel"], metrics
        assert metrics["depth_delta1"] > metrics[f"{floor}_depth_delta1"], metrics
