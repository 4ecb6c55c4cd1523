"""Dynamic mode's own parts: animated clips from the shared recipe (torch stream and Blender engine),
a temporal model trained on them (warm-started from a single-image one), frames sampled with correlated
noise and anchored together, object clips framed once, the clip evaluation, and the shipped dynamic
model against its floor."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from conftest import ROOT, run_python, small_config

from core.data.generate import GenerateConfig, generate
from core.data.motion import MOTIONS, camera_path, draw_motions, moved
from core.data.shards import ShardReader
from core.data.stream import SceneStream, StreamConfig
from core.geometry.points import PointNormalization
from core.model.checkpoint import save_checkpoint
from core.model.loading import load_model
from core.model.wtdit import WTDiT
from core.sampling import SampleConfig, fill_noise, sample_steps
from core.train.evaluate_clip import stability
from core.train.loop import TrainConfig, train, warm_start

SMALL = small_config().to_dict()


def pairwise(vertices: np.ndarray) -> np.ndarray:
    return np.linalg.norm(vertices[:, None] - vertices[None], axis=-1)


def test_parts_move_as_their_kind_of_motion_says():
    """Still parts stay; rigid and hinged parts keep their shape (a hinge keeps its axis point); a
    bent part changes shape but its middle stays; unknown kinds are refused."""
    rng = np.random.default_rng(0)
    vertices = rng.uniform(-0.3, 0.3, (60, 3))
    vertices[0] = 0.5 * (vertices.min(0) + vertices.max(0))  # the bounding box's centre
    mesh = (vertices, np.zeros((0, 3), np.int64))
    for kind in MOTIONS:
        (motion,) = draw_motions(rng, [mesh], kind)
        after, _ = moved(mesh, motion, 3)
        assert moved(mesh, motion, 0)[0] is vertices
        if kind == "static":
            assert np.array_equal(after, vertices)
            continue
        assert not np.allclose(after, vertices)
        if kind in ("rigid", "hinge"):
            assert np.allclose(pairwise(after), pairwise(vertices), atol=1e-9)
        if kind == "hinge":
            pivot, _ = moved((motion.pivot[None], mesh[1]), motion, 3)
            assert np.allclose(pivot, motion.pivot[None])
        if kind == "bend":
            assert not np.allclose(pairwise(after), pairwise(vertices), atol=1e-3)
            assert np.allclose(after[0], vertices[0], atol=1e-9)
    with pytest.raises(ValueError, match="unknown motion"):
        draw_motions(rng, [mesh], "dance")


def test_the_camera_orbits_unless_the_clip_is_still():
    rng = np.random.default_rng(1)
    camera = (np.array([2.0, 0.0, 0.5]), np.array([-2.0, 0.0, -0.5]), math.radians(50))
    still = camera_path(rng, camera, 4, still=True)
    assert all(np.array_equal(c[0], camera[0]) and np.array_equal(c[1], camera[1]) for c in still)
    moving = camera_path(rng, camera, 4, still=False)
    assert np.array_equal(moving[0][0], camera[0]) and not np.allclose(moving[3][0], camera[0])
    assert all(c[2] == camera[2] for c in moving)


def test_stream_clips_hold_every_frame_and_move_only_when_they_should():
    """Clip batches: image [B, T, 3, H, W], points [B, T·L, ...]; a still clip's geometry is the same in
    every frame and its images differ by sensor noise only; a moving clip's geometry changes."""
    T, L, R = 3, 4, 48
    still = SceneStream(StreamConfig(resolution=R, layers=L, frames=T, motion="static"), seed=5).batch(2)
    assert still["image"].shape == (2, T, 3, R, R) and still["points"].shape == (2, T * L, R, R, 3)
    assert still["valid"].shape == (2, T * L, R, R) and still["foreground"].shape == (2, T, R, R)
    assert torch.equal(still["foreground"], still["valid"][:, ::L])
    assert torch.equal(still["points"][:, :L], still["points"][:, L : 2 * L])
    difference = (still["image"][:, 0] - still["image"][:, 1]).abs()
    assert 0 < difference.mean() < 0.03
    moving = SceneStream(StreamConfig(resolution=R, layers=L, frames=T, motion="rigid"), seed=5).batch(2)
    assert not torch.equal(moving["valid"][:, :L], moving["valid"][:, -L:])
    with pytest.raises(ValueError, match="frames"):
        StreamConfig(frames=4, mode="scene")


def test_temporal_blocks_warm_started_from_a_single_image_model_add_nothing(tmp_path):
    """A temporal model warm-started from a single-image checkpoint predicts exactly what the same
    weights without temporal blocks predict on the same clip: training starts from the model it extends."""
    torch.manual_seed(0)
    single = WTDiT(small_config())
    torch.nn.init.normal_(single.head.out.weight, std=0.05)
    path = tmp_path / "single.safetensors"
    save_checkpoint(path, single.state_dict(), single.cfg, PointNormalization(), {"name": "single"})
    temporal = WTDiT(dataclasses.replace(small_config(), temporal=True))
    warm_start(temporal, str(path), log=lambda _: None)
    plain = WTDiT(small_config())
    plain.load_state_dict({k: v for k, v in temporal.state_dict().items() if not k.startswith("temporal_blocks.")})
    x_t, image = torch.randn(1, 3 * 4, 32, 32, 3), torch.rand(1, 3, 3, 32, 32)
    t = torch.rand(1, 4)
    with torch.no_grad():
        assert torch.allclose(temporal(x_t, t, image), plain(x_t, t, image), atol=1e-6)
        assert any(p.abs().sum() > 0 for p in temporal.temporal_blocks.parameters())


def test_correlated_fill_noise_is_shared_across_frames():
    like = torch.zeros(2, 3 * 4, 8, 8, 3)
    independent = fill_noise(like, torch.Generator().manual_seed(0), frames=3)
    assert not torch.allclose(independent[:, :4], independent[:, 4:8])
    shared = fill_noise(like, torch.Generator().manual_seed(0), frames=3, correlation=1.0)
    assert torch.allclose(shared[:, :4], shared[:, 4:8]) and torch.allclose(shared[:, :4], shared[:, 8:])
    half = fill_noise(torch.zeros(1, 2 * 4, 64, 64, 3), torch.Generator().manual_seed(0), frames=2, correlation=0.5)
    rho = torch.corrcoef(torch.stack([half[0, :4].flatten(), half[0, 4:].flatten()]))[0, 1]
    assert abs(float(rho) - 0.5) < 0.05 and abs(float(half.std()) - 1) < 0.05


def test_the_sampler_restarts_the_visible_layer_of_every_frame():
    """With an anchor that returns a guess per frame, views 0, L, 2L... restart from (1 − t0)·guess + t0·noise
    after the first step, and the model is then called with per-layer times [B, L] whose layer 0 is t0."""
    B, T, L, S = 1, 3, 2, 8
    noise = torch.randn(B, T * L, S, S, 3)
    guess = torch.randn(B, T, S, S, 3)
    times = []

    def model(x, t, image):
        times.append(t.clone())
        return torch.zeros_like(x)

    steps = sample_steps(model, None, noise, SampleConfig(steps=4, anchor=0.3), anchor=lambda x0: guess, frames=T)
    first = next(steps)
    assert torch.allclose(first.x[:, ::L], 0.7 * guess + 0.3 * noise[:, ::L])
    next(steps)
    assert times[0].shape == (B,) and times[1].shape == (B, L)
    assert torch.allclose(times[1][:, 0], torch.tensor(0.3)) and times[1][0, 1] > 0.3


@pytest.fixture(scope="module")
def clip_models(tmp_path_factory):
    """A random temporal model in object units and a random single-image one, as checkpoints."""
    root = tmp_path_factory.mktemp("dynamic")
    torch.manual_seed(2)
    paths = {}
    for name, temporal in (("temporal", True), ("single", False)):
        model = WTDiT(dataclasses.replace(small_config(), temporal=temporal))
        torch.nn.init.normal_(model.head.out.weight, std=0.05)
        paths[name] = root / f"{name}.safetensors"
        info = {"name": name, "frame_correlation": 1.0} if temporal else {"name": name}
        save_checkpoint(paths[name], model.state_dict(), model.cfg, PointNormalization(), info)
    return paths


def test_object_clips_are_framed_once_and_every_frame_is_anchored(clip_models):
    """A temporal object-unit model anchors the visible layer of every frame and samples with the noise
    its checkpoint records; a transparent clip is seen through one square, so geometry stays inside
    each frame's own alpha."""
    from core.clip import trace_clip

    model, normalization, card = load_model(clip_models["temporal"])
    cfg = card.sample_config(steps=3)
    assert card.mode == "dynamic" and cfg.anchor is not None
    assert cfg.frame_correlation == cfg.fill_correlation == 1.0
    frames = np.zeros((5, 40, 56, 4), np.uint8)
    for t in range(5):
        frames[t, 8:28, 4 + 6 * t : 20 + 6 * t] = (200, 90, 40, 255)
    clip = trace_clip(model, normalization, frames, cfg, edge_filter_strength=0)
    alpha = frames[..., 3] > 127
    assert clip.points.shape == (5, 4, 40, 56, 3)
    assert not (clip.valid[:, 0] & ~alpha).any() and clip.valid[:, 0][alpha].mean() > 0.9
    frames[2, ..., 3] = 0
    with pytest.raises(ValueError, match="frame 3 of 5 has no foreground"):
        trace_clip(model, normalization, frames, cfg)


def test_stability_is_zero_for_a_steady_prediction_and_grows_with_flicker():
    rng = np.random.default_rng(0)
    truth = np.repeat(rng.uniform(0.5, 1.5, (1, 2, 16, 16, 3)), 4, axis=0)
    valid = np.ones(truth.shape[:-1], bool)
    assert stability(truth * 2, valid, truth, valid) == pytest.approx(0, abs=1e-9)
    flicker = truth * (1 + 0.05 * rng.normal(size=(4, 1, 1, 1, 1)))
    more = truth * (1 + 0.2 * rng.normal(size=(4, 1, 1, 1, 1)))
    assert 0 < stability(flicker, valid, truth, valid) < stability(more, valid, truth, valid)


def test_eval_clip_puts_the_model_beside_the_per_frame_floors_inflation_and_a_perfect_depth_map(clip_models, tmp_path):
    out = tmp_path / "clips.json"
    result = run_python(
        ["-m", "core", "eval-clip", "--checkpoint", str(clip_models["temporal"]), "--floor", str(clip_models["single"]),
         "--clips", "2", "--frames", "2", "--steps", "1", "--device", "cpu", "--json", str(out),
         "--figure", str(tmp_path / "clips.png")],
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| frame-to-frame change, still clips ↓ |" in result.stdout
    metrics = json.loads(out.read_text())["metrics"]
    for name in ("model", "per-frame", "per-frame, seed per frame", "inflation", "oracle"):
        assert np.isfinite(metrics[f"{name}_all_cd_l1"]) and f"{name}_stability" in metrics
    assert metrics["oracle_stability"] == pytest.approx(0, abs=1e-9)
    assert metrics["oracle_l0_abs_rel"] == pytest.approx(0, abs=1e-9)
    from PIL import Image

    with Image.open(tmp_path / "clips.png") as figure:  # 2 clips × (frames + model, 2 floors, truth) rows
        assert figure.height > 10 * 96 and figure.width > 4 * 96


def test_a_temporal_model_trains_on_streamed_clips_and_records_its_noise(tmp_path):
    """Two steps on streamed 2-frame clips write a dynamic checkpoint that records ρ; a temporal model
    without clips, or clips with shard validation, are refused."""
    base = dict(
        out=str(tmp_path / "run"), model="tiny", model_overrides={**SMALL, "temporal": True}, stream_fraction=1.0,
        stream_frames=2, frame_correlation=1.0, steps=2, batch_size=2, warmup=1, log_every=1, save_every=2,
        device="cpu",
    )  # fmt: skip
    path = train(TrainConfig(**base), progress=False)
    _, _, card = load_model(path)
    assert card.mode == "dynamic" and card.frame_correlation == 1.0
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) for r in rows if "loss" in r)
    for wrong in ({"stream_frames": 1}, {"val": str(tmp_path)}):
        with pytest.raises(ValueError, match="temporal model trains on clips"):
            train(TrainConfig(**{**base, **wrong, "out": str(tmp_path / "wrong")}), progress=False)


def test_the_shipped_dynamic_model_is_recorded():
    """It is a temporal model in object units warm-started from the shipped object model, with the command,
    data and hardware of its training and the noise correlation its sampler uses."""
    from core.assets import SHIPPED_CHECKPOINTS

    path = SHIPPED_CHECKPOINTS["dynamic"]
    assert path.stat().st_size < 50 * 2**20
    model, normalization, card = load_model(path)
    assert card.mode == "dynamic" and model.cfg.temporal and normalization.mode == "zscore"
    assert card.anchor is not None and card.frame_correlation == card.fill_correlation == 1.0
    info = card.info
    assert "stream_frames" in info["command"] or "tiny_dynamic.json" in info["command"]
    assert info["hardware"] and info["wall_time_s"] > 0
    assert any("wt-tiny.safetensors" in h.get("checkpoint", "") for h in info["history"])
    assert (ROOT / "core/train/recipes/tiny_dynamic.json").is_file()


@pytest.mark.slow
def test_the_shipped_dynamic_model_is_steady_and_keeps_the_object_models_quality():
    """On clips of held-out shape families (a seed no training run reaches) the shipped dynamic model
    flickers far less on still clips than the object model traced with a seed per frame, and is within
    5 % of it frame by frame (the README's table has the full comparison)."""
    from core.assets import SHIPPED_CHECKPOINTS
    from core.train.evaluate_clip import eval_clips, evaluate_clips

    model, normalization, card = load_model(SHIPPED_CHECKPOINTS["dynamic"])
    floor, floor_normalization, floor_card = load_model(SHIPPED_CHECKPOINTS["object"])
    predictors = {
        "model": (model, normalization, card.sample_config(steps=10), True),
        "floor": (floor, floor_normalization, floor_card.sample_config(steps=10), False),
    }
    metrics = evaluate_clips(predictors, eval_clips(4, 4, 10**7 + 1, "unseen", 4))
    assert metrics["model_stability"] < 0.2 * metrics["floor_stability"]
    assert metrics["model_all_cd_l1"] < 1.05 * metrics["floor_all_cd_l1"]
    assert metrics["model_all_f@0.05"] > 0.95 * metrics["floor_all_f@0.05"]
    assert metrics["model_all_cd_l1"] < metrics["inflation_all_cd_l1"]


@pytest.fixture(scope="module")
def blender_clips(tmp_path_factory):
    """Clip shards from the Blender engine, 3 frames at 32 px: two still clips and two moving ones."""
    root = tmp_path_factory.mktemp("blender_clips")
    folders = {}
    for motion in ("static", "rigid"):
        cfg = GenerateConfig(out=str(root / motion), count=2, seed=5, resolution=32, frames=3, motion=motion,
                             render_samples=4, workers=1, shard_size=2)  # fmt: skip
        assert generate(cfg, progress=False) == 2
        folders[motion] = cfg.out
    return folders


@pytest.mark.blender
def test_the_blender_engine_renders_clips_that_move_only_when_they_should(blender_clips):
    """Every frame's render and trace agree; a still clip keeps its geometry and camera and changes only by
    render noise, a moving one changes both; the reader gives clips as the stream does."""
    for motion, folder in blender_clips.items():
        reader = ShardReader(folder)
        assert reader.frames == 3 and len(reader) == 2
        assert [sample["motion"] for shard in reader.meta for sample in shard["samples"]] == [motion] * 2
        for i in range(2):
            distance, alpha, rgb = reader.distance[i].astype(np.float32), reader.alpha[i], reader.rgb[i].astype(float)
            assert all(((alpha[t] > 127) == (distance[t, 0] > 0)).mean() >= 0.98 for t in range(3))
            if motion == "static":
                assert np.array_equal(distance[0], distance[2])
                assert np.array_equal(reader.cam_to_world[i, 0], reader.cam_to_world[i, 2])
                assert not np.array_equal(rgb[0], rgb[2]) and np.corrcoef(rgb[0].ravel(), rgb[2].ravel())[0, 1] > 0.9
            else:
                assert np.abs(distance[0] - distance[2]).mean() > 1e-3
                assert not np.allclose(reader.cam_to_world[i, 0], reader.cam_to_world[i, 2])
        b = reader.batch([0, 1], num_layers=4)
        assert b["image"].shape == (2, 3, 3, 32, 32) and b["points"].shape == (2, 12, 32, 32, 3)
        assert torch.equal(b["foreground"], b["valid"][:, ::4])


@pytest.mark.blender
def test_a_temporal_model_trains_on_blender_clips_and_eval_clip_measures_on_them(blender_clips, clip_models, tmp_path):
    """One step on the engine's 3-frame clip shards writes a dynamic checkpoint (clips of another length
    are refused); eval-clip --data measures a model on the still shards beside the per-frame floors."""
    base = dict(
        data=[blender_clips["rigid"]], out=str(tmp_path / "run"), model="tiny",
        model_overrides={**SMALL, "temporal": True}, stream_frames=3, steps=1, batch_size=2, warmup=1,
        log_every=1, save_every=1, device="cpu",
    )  # fmt: skip
    _, _, card = load_model(train(TrainConfig(**base), progress=False))
    assert card.mode == "dynamic"
    with pytest.raises(ValueError, match="shards of 3-frame samples"):
        train(TrainConfig(**{**base, "stream_frames": 2, "out": str(tmp_path / "wrong")}), progress=False)
    out = tmp_path / "clips.json"
    result = run_python(
        ["-m", "core", "eval-clip", "--checkpoint", str(clip_models["temporal"]), "--floor", str(clip_models["single"]),
         "--data", blender_clips["static"], "--steps", "1", "--device", "cpu", "--json", str(out)],
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"2 clips of 3 frames from {blender_clips['static']}" in result.stdout
    metrics = json.loads(out.read_text())["metrics"]
    assert metrics["oracle_stability"] == pytest.approx(0, abs=1e-9)
    assert np.isfinite(metrics["model_stability"]) and np.isfinite(metrics["per-frame_all_cd_l1"])
