"""Training: a short real run, resume, checkpoints that carry their config, and 2-process DDP."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from conftest import run_python, small_config, write_sphere_shards

from core.geometry.points import PointNormalization
from core.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from core.model.wtdit import WTDiT
from core.train.loop import TrainConfig, get_lr, train

SMALL = {k: v for k, v in small_config().to_dict().items()}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("spheres")
    return write_sphere_shards(root / "train", 16), write_sphere_shards(root / "val", 4, seed=1)


def validation_batch(shards) -> dict:
    """A batch of two validation spheres (image, points, valid, foreground)."""
    from core.data.shards import ShardReader

    return ShardReader(shards[1]).batch([0, 1])


def config(shards, out, **kw) -> TrainConfig:
    train_dir, val_dir = shards
    base = dict(
        data=[str(train_dir)],
        val=str(val_dir),
        out=str(out),
        model="tiny",
        model_overrides=SMALL,
        steps=6,
        batch_size=4,
        lr=1e-3,
        warmup=2,
        log_every=2,
        eval_every=6,
        eval_samples=4,
        eval_steps=2,
        save_every=3,
        device="cpu",
    )
    return TrainConfig(**{**base, **kw})


def test_learning_rate_warms_up_then_decays_to_the_floor():
    """Linear warm-up to the peak, cosine down to min_lr at the last step."""
    cfg = TrainConfig(data=[], out="", steps=100, warmup=10, lr=1e-3, min_lr=1e-5)
    assert get_lr(0, cfg) == pytest.approx(1e-4) and get_lr(9, cfg) == pytest.approx(1e-3)
    assert get_lr(55, cfg) < 1e-3 and get_lr(100, cfg) == pytest.approx(1e-5)


@pytest.mark.slow
def test_short_run_logs_validates_and_writes_a_loadable_checkpoint(shards, tmp_path):
    """Six steps: finite losses in the JSONL log, validation metrics, curves, and an EMA checkpoint."""
    path = train(config(shards, tmp_path), progress=False)
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    val = [r for r in rows if "val_loss" in r]
    assert val and "val_l0_abs_rel" in val[-1] and "val_all_f@0.05" in val[-1]
    for png in ("loss.png", "val_metrics.png", "predictions.png"):
        assert (tmp_path / png).stat().st_size > 0
    model, normalization, info = load_checkpoint(path)
    assert model.cfg == small_config() and normalization.mode == "zscore" and info["step"] == 6


def test_time_budget_decays_the_learning_rate_by_its_end():
    """With a wall-time budget the cosine reaches min_lr when the time is used up, whatever the steps."""
    cfg = TrainConfig(data=[], out="", steps=10**6, warmup=10, lr=1e-3, min_lr=1e-5, minutes=1.0)
    assert get_lr(20, cfg, time_used=0.0) == pytest.approx(1e-3, rel=1e-3)
    assert get_lr(20, cfg, time_used=0.5) == pytest.approx(0.5 * (1e-3 + 1e-5))
    assert get_lr(20, cfg, time_used=1.0) == pytest.approx(1e-5)


@pytest.mark.slow
def test_warm_start_adds_the_silhouette_prior_and_keeps_the_record(shards, tmp_path):
    """A run warm-started from another run's checkpoint copies its weights, starts exactly as the
    silhouette prior (output layer zeroed), stops on its time budget with a checkpoint, and carries
    the first run's record in its history."""
    from core.train.loop import warm_start

    first = train(config(shards, tmp_path / "first"), progress=False)
    prior = {**SMALL, "silhouette_prior": True}
    model = WTDiT(dataclasses.replace(small_config(), silhouette_prior=True))
    history = warm_start(model, str(first), log=lambda _: None)
    source = load_checkpoint(first)[0]
    assert torch.equal(model.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)
    old = source.geometry_proj.weight
    assert torch.equal(model.geometry_proj.weight[:, : old.shape[1]], old)
    assert not model.geometry_proj.weight[:, old.shape[1] :].any()
    b = validation_batch(shards)
    x = torch.randn(2, 4, 32, 32, 3)
    with torch.no_grad():
        assert torch.equal(model(x, torch.rand(2), b["image"], b["foreground"]), model.silhouette(b["foreground"]))
    with pytest.raises(ValueError, match="foreground"):
        model(x, torch.rand(2), b["image"])
    assert history[-1]["checkpoint"] == str(first) and history[-1]["step"] == 6

    args = ["-m", "core", "train", "--data", str(shards[0]), "--out", str(tmp_path / "second"), "--model", "tiny",
            "--model-overrides", json.dumps(prior), "--init", str(first), "--steps", "1000000", "--minutes", "0.1",
            "--batch-size", "2", "--warmup", "1", "--save-every", "1000000", "--device", "cpu"]  # fmt: skip
    result = run_python(args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "warm start from" in result.stdout
    _, _, info = load_checkpoint(tmp_path / "second" / "model.safetensors")
    assert 0 < info["step"] < 1000000 and info["history"][-1]["checkpoint"] == str(first)
    assert info["command"].startswith("python -m core train --data") and "--init" in info["command"]
    assert info["train_config"]["model_overrides"]["silhouette_prior"]
    assert info["data"]["samples"] == 16 and str(shards[0]) in info["data"]["folders"]
    assert 0 < info["wall_time_s"] < 600 and "CPU" in info["hardware"]


def test_refinement_head_starts_as_identity_and_learns(shards):
    """A model that gains the full-resolution refinement head predicts exactly what it did without it
    until the head's last convolution moves; that convolution gets gradients from the loss."""
    from core.train.flow import flow_loss

    torch.manual_seed(0)
    plain = WTDiT(dataclasses.replace(small_config(), silhouette_prior=True))
    refined = WTDiT(dataclasses.replace(small_config(), silhouette_prior=True, refine_width=8))
    refined.load_state_dict(plain.state_dict(), strict=False)
    b = validation_batch(shards)
    x, t = torch.randn(2, 4, 32, 32, 3), torch.rand(2)
    with torch.no_grad():
        assert torch.equal(refined(x, t, b["image"], b["foreground"]), plain(x, t, b["image"], b["foreground"]))
    loss, _ = flow_loss(
        refined, {k: v[:, :4] if k in ("points", "valid") else v for k, v in b.items()}, PointNormalization("zscore")
    )
    loss.backward()
    assert refined.refine.out.weight.grad.abs().sum() > 0


@pytest.mark.slow
def test_training_resumes_from_its_state(shards, tmp_path):
    """A run stopped at step 3 continues to 6 from state.safetensors, not from scratch."""
    train(config(shards, tmp_path, steps=3), progress=False)
    first = [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    train(config(shards, tmp_path, steps=6), progress=False)
    steps = [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert (
        max(first) == 3
        and steps[len(first) :] == [4, 6, 6]
        and load_checkpoint(tmp_path / "model.safetensors")[2]["step"] == 6
    )


def test_checkpoint_whose_tensors_do_not_fit_its_config_is_refused(tmp_path):
    """Loading names the mismatch instead of silently dropping or reshaping weights."""
    model = WTDiT(small_config())
    state = model.state_dict()
    state["head.out.weight"] = torch.zeros(5, 32)
    del state["blocks.0.mlp.fc1.bias"]
    save_checkpoint(tmp_path / "bad.safetensors", state, small_config(), PointNormalization())
    with pytest.raises(CheckpointError, match="1 missing.*other shapes"):
        load_checkpoint(tmp_path / "bad.safetensors")
    (tmp_path / "text.safetensors").write_text("not weights")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(tmp_path / "text.safetensors")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.safetensors")


@pytest.mark.slow
def test_two_process_ddp_training_keeps_replicas_identical(shards, tmp_path):
    """torchrun with 2 CPU processes (gloo): finite losses, and every replica ends with the same weights."""
    train_dir, _ = shards
    args = ["-m", "core", "train", "--data", str(train_dir), "--out", str(tmp_path), "--steps", "4",
            "--batch-size", "2", "--warmup", "1", "--save-every", "4", "--device", "cpu",
            "--model-overrides", json.dumps(SMALL)]  # fmt: skip
    result = run_python(args, processes=2)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    sums = next(r["replica_checksums"] for r in rows if "replica_checksums" in r)
    assert len(sums) == 2 and sums[0] == sums[1]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows if "loss" in r)


def test_a_data_set_smaller_than_one_batch_is_refused(shards):
    """Fewer samples than the batch size would never yield a batch: a clear error instead of a hang."""
    from core.data.shards import ShardReader

    reader = ShardReader(shards[1])
    with pytest.raises(ValueError, match=f"needs at least that many samples; the data has {len(reader)}"):
        next(reader.batches(len(reader) + 1))


FINITE = r"""
import os, sys, torch, torch.distributed as dist
from core.train.loop import all_finite
dist.init_process_group("gloo")
rank = dist.get_rank()
loss = torch.tensor(float("nan") if rank == 1 else 1.0)
open(f"{sys.argv[1]}/rank{rank}.txt", "w").write(str(all_finite(loss, 2)))
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_a_loss_that_is_not_finite_on_one_rank_stops_every_rank(tmp_path):
    """The finiteness check agrees across ranks before anyone steps, so no rank waits alone in an all-reduce."""
    script = tmp_path / "finite.py"
    script.write_text(FINITE)
    result = run_python([str(script), str(tmp_path)], processes=2, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert [(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)] == ["False", "False"]


def test_prior_placement_is_the_scale_and_z_shift_evaluation_ignores(shards):
    """The placement moves the prior only by a scale about the camera and a shift along z, the two
    things the evaluation aligns away: placed back by the alignment it is the unplaced prior."""
    from core.geometry.alignment import align_points_scale_z_shift, apply_scale_z_shift

    model = WTDiT(dataclasses.replace(small_config(), silhouette_prior=True))
    fg = validation_batch(shards)["foreground"][:1]
    normalization = PointNormalization("zscore")
    plain = normalization.denormalize(model.silhouette(fg))[0].numpy()  # [L, H, W, 3]
    placed = normalization.denormalize(model.silhouette(fg, torch.tensor([[0.4, -0.7, 0.0, 0.0]])))[0].numpy()
    m = fg[0].numpy()
    assert abs(placed[0][m][:, 2].mean() - plain[0][m][:, 2].mean()) > 0.1  # it did move
    scale, shift = align_points_scale_z_shift(placed[0][m], plain[0][m])
    assert abs(scale - torch.tensor(-0.4).exp().item()) < 1e-4
    assert abs(apply_scale_z_shift(placed, scale, shift)[:, m] - plain[:, m]).max() < 1e-4
    # a tilt slides points along their rays: a plane of depth change, no alignment undoes it
    tilted = normalization.denormalize(model.silhouette(fg, torch.tensor([[0.0, 0.0, 0.5, 0.0]])))[0].numpy()
    rays = lambda p: p[..., :2] / p[..., 2:]  # noqa: E731
    assert abs(rays(tilted[:, m]) - rays(plain[:, m])).max() < 1e-4
    ratio = tilted[0][m][:, 2] / plain[0][m][:, 2]
    assert abs(ratio - (1 + 0.5 * rays(plain[0][m])[:, 0])).max() < 1e-4 and ratio.std() > 0.01


def test_batches_mix_shards_and_the_stream_of_the_same_kind(shards):
    """Half of each batch from the object shards and half from the object stream; a scene stream beside
    object shards is refused before training starts."""
    from core.data.shards import ShardReader
    from core.model.wtdit import build_config
    from core.train.loop import training_batches

    cfg = config(shards, "unused", stream_fraction=0.5)
    model_cfg = build_config("tiny", **SMALL)
    batch = next(training_batches(cfg, ShardReader(cfg.data), model_cfg, torch.device("cpu"), 0, 0))
    assert batch["points"].shape[0] == 4 and batch["foreground"].flatten(1).any(1).all()
    with pytest.raises(ValueError, match="the shards hold object samples but the stream draws scene ones"):
        train(config(shards, "unused", stream_fraction=0.5, stream_mode="scene"))
