"""The torch ground-truth stream: its multi-hit tracer against the Blender engine, shading, batches, bank."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, run_python, small_config, write_sphere_shards

from core.data.recipe import FAMILIES, grid_faces, object_camera, surface_of_revolution
from core.data.shards import BACKGROUND
from core.data.stream import SceneStream, StreamConfig, load_bank
from core.geometry.raytrace import occluded_along, trace_camera


@pytest.mark.parametrize("seed, mode", [(0, "object"), (1, "object"), (1, "scene"), (2, "scene")])
def test_torch_tracer_agrees_with_the_blender_engine(blender, seed, mode):
    """Same triangles, same camera: identical hit counts per pixel and distances to 1e-4 relative
    (scene seeds 1 and 2 draw a room and a street)."""
    from core.data.scenes import add_camera, build_layout_scene, build_object_scene, reset_scene
    from core.data.tracing import render_and_trace, scene_triangles

    R = 64
    rng = np.random.default_rng(seed)
    reset_scene(R, 1, 1, transparent=mode == "object")
    if mode == "object":
        build_object_scene(rng, [], [])
        add_camera(*object_camera(rng))
    else:
        add_camera(*build_layout_scene(rng)[1])
    blender_sample = render_and_trace(6, [])
    v, f = scene_triangles([])
    c2w = blender_sample.cam_to_world.astype(np.float64)
    cam_v = torch.from_numpy((v - c2w[:3, 3]) @ c2w[:3, :3]).float()
    distance, _ = trace_camera(cam_v, torch.from_numpy(f), torch.from_numpy(blender_sample.intrinsics), R, R, 6)
    ours, theirs = distance.numpy(), blender_sample.distance
    counts_agree = ((ours > 0).sum(0) == (theirs > 0).sum(0)).mean()
    both = (ours > 0) & (theirs > 0)
    assert counts_agree >= 0.999 and both.sum() > 0.1 * R * R, counts_agree
    assert np.max(np.abs(ours[both] - theirs[both]) / theirs[both]) < 1e-4


def test_torch_tracer_finds_both_crossings_of_a_sphere():
    """A closed sphere gives enter and exit distances matching the ray-sphere solution, nothing else."""
    theta = np.linspace(0, np.pi, 48)
    v, f = surface_of_revolution(np.sin(theta), -np.cos(theta))  # radius 1
    v = v[:, [2, 0, 1]]  # poles off the line of sight, where many thin triangles meet
    v, f = torch.from_numpy(v).float() + torch.tensor([0.0, 0.0, 3.0]), torch.from_numpy(f)
    R, fpx = 48, 60.0
    K = torch.tensor([[fpx, 0, R / 2], [0, fpx, R / 2], [0, 0, 1.0]])
    distance, index = trace_camera(v, f, K, R, R, 4)
    centre = distance[:, R // 2, R // 2]
    assert centre[0] == pytest.approx(2.0, rel=2e-3) and centre[1] == pytest.approx(4.0, rel=2e-3) and centre[2] == 0
    assert ((distance[1] > 0) == (distance[0] > 0)).float().mean() > 0.99
    assert ((index >= 0) == (distance > 0)).all()


def test_shadow_rays_see_occluders_toward_the_sun():
    """Points under a plane are in its shadow for a sun overhead, and lit for a sun to the side."""
    g = torch.linspace(-1.0, 1.0, 9)
    y, x = torch.meshgrid(g, g, indexing="ij")
    v = torch.stack([x, y, torch.ones_like(x)], -1).reshape(-1, 3)  # a 2×2 plane at z = 1
    f = torch.from_numpy(grid_faces(9, 9, wrap=False))
    points = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.2, 0.0], [3.0, 0.0, 0.0]])
    overhead = occluded_along(points, torch.tensor([0.0, 0.0, 1.0]), v, f)
    assert overhead.tolist() == [True, True, False]
    assert not occluded_along(points, torch.tensor([1.0, 0.0, 0.0]), v, f).any()


def test_stream_batches_look_like_shard_batches():
    """Same keys, shapes and conventions as ShardReader.batch; layers front to back; points on their rays."""
    stream = SceneStream(StreamConfig(resolution=32, layers=4), seed=0)
    b = stream.batch(3)
    assert (
        b["image"].shape == (3, 3, 32, 32)
        and b["points"].shape == (3, 4, 32, 32, 3)
        and b["valid"].shape == (3, 4, 32, 32)
    )
    assert b["image"].min() >= 0 and b["image"].max() <= 1 and b["foreground"].any()
    z = b["points"][..., 2]
    both = b["valid"][:, 1:] & b["valid"][:, :-1]
    assert (z[:, 1:][both] > z[:, :-1][both]).all() and not (b["valid"][:, 1:] & ~b["valid"][:, :-1]).any()
    p, K = b["points"][:, 0], b["intrinsics"]
    u = p[..., 0] / p[..., 2] * K[:, 0, 0, None, None] + K[:, 0, 2, None, None]
    cols = torch.arange(32) + 0.5
    assert (u - cols)[b["valid"][:, 0]].abs().max() < 1e-3


def test_stream_redraws_scenes_the_camera_does_not_see():
    """One-pixel images: the centre ray misses tori, tubes, open shells and cut shapes often, so
    without redraws many samples would be empty; every sample has its pixel covered, from every family."""
    for seed in (11, 12, 13):
        stream = SceneStream(StreamConfig(resolution=1, layers=2), seed=seed)
        samples = [stream.sample() for _ in range(60)]
        assert all(s["alpha"].item() == 1 and s["distance"][0].item() > 0 for s in samples)
    empty = torch.zeros(0, 3)
    assert occluded_along(empty, torch.tensor([0.0, 0.0, 1.0]), torch.eye(3), torch.tensor([[0, 1, 2]])).shape == (0,)


def test_stream_draws_held_out_families_only_when_asked():
    """Every family of the recipe meshes into a closed, outward, traceable shape; unknown names are refused."""
    for family in FAMILIES:
        b = SceneStream(StreamConfig(resolution=16, layers=4, families=(family,)), seed=0).batch(2)
        assert b["foreground"].float().mean() > 0.05, family
        closed = b["valid"][:, 0] & b["valid"][:, 1]  # a ray that enters a closed shape leaves it again
        assert closed.sum() >= 0.5 * b["foreground"].sum(), family
    with pytest.raises(ValueError, match="unknown shape families"):
        StreamConfig(families=("teapot",))


def test_stream_is_deterministic_per_seed():
    """Two streams with one seed give identical batches; another seed gives different ones."""
    a = SceneStream(StreamConfig(resolution=24, layers=2), seed=7).batch(2)
    b = SceneStream(StreamConfig(resolution=24, layers=2), seed=7).batch(2)
    c = SceneStream(StreamConfig(resolution=24, layers=2), seed=8).batch(2)
    assert all(torch.equal(a[k], b[k]) for k in a) and not torch.equal(a["points"], c["points"])


@pytest.mark.blender
def test_bank_exported_from_blender_feeds_the_stream(tmp_path):
    """`python -m core bank` writes Blender-made meshes that the stream loads and traces."""
    out = tmp_path / "bank.npz"
    result = subprocess.run(
        [sys.executable, "-m", "core", "bank", "--out", str(out), "--count", "3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    bank = load_bank(out)
    assert 1 <= len(bank) <= 3 and all(len(f) > 0 and f.max() < len(v) for v, f in bank)
    stream = SceneStream(StreamConfig(resolution=24, layers=2, bank=str(out)), seed=0)
    assert stream.batch(4)["valid"].any()


@pytest.mark.slow
def test_mixed_stream_training_resumes_on_another_process_count(tmp_path):
    """Two processes train on shards + stream, then one process resumes the same run from its state."""
    shards = write_sphere_shards(tmp_path / "shards", 8)
    overrides = json.dumps(small_config().to_dict())
    common = ["-m", "core", "train", "--data", str(shards), "--out", str(tmp_path / "run"), "--batch-size", "2",
              "--warmup", "1", "--save-every", "2", "--device", "cpu", "--model-overrides", overrides,
              "--stream-fraction", "0.5"]  # fmt: skip
    two = run_python([*common, "--steps", "2"], processes=2)
    assert two.returncode == 0, two.stderr[-3000:]
    one = run_python([*common, "--steps", "4"])
    assert one.returncode == 0, one.stderr[-3000:]
    assert "starting at step 2" in one.stdout
    from core.model.checkpoint import load_checkpoint

    assert load_checkpoint(tmp_path / "run" / "model.safetensors")[2]["step"] == 4


def test_scene_stream_shows_rooms_and_streets_under_a_sky():
    """Scene mode: opaque images (no grey background), pixels that hit nothing are sky and invalid,
    and depths span metres (rooms and streets, not the object sphere)."""
    b = SceneStream(StreamConfig(resolution=32, layers=4, mode="scene"), seed=2).batch(6)
    sky = ~b["valid"][:, 0]
    assert sky.any() and b["foreground"].float().mean() > 0.5
    sky_rgb = b["image"].permute(0, 2, 3, 1)[sky]
    assert (sky_rgb[:, 2] >= 0.9 - 1e-6).all()  # bright blue-grey, not the objects' grey background
    assert not torch.isclose(sky_rgb, BACKGROUND, atol=0.05).all(-1).any()
    z = b["points"][..., 2][b["valid"]]
    assert z.min() > 0.05 and z.max() > 10.0
    with pytest.raises(ValueError, match="mode must be"):
        StreamConfig(mode="street")
