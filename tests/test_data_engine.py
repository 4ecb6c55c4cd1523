"""The Blender ground-truth engine: analytic scenes, alignment with the render, shards, resume."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import run_python

from core.data.generate import GenerateConfig, generate, make_sample
from core.data.preview import preview_sheet
from core.data.scenes import add_camera, reset_scene
from core.data.shards import ShardReader, shard_path
from core.data.tracing import SkipSample, render_and_trace

pytestmark = pytest.mark.blender  # the engine renders and traces in Blender (here, or in worker processes)

RES = 48


def trace_scene(bpy, build, camera_at=(0.0, -3.0, 0.0), look=(0.0, 1.0, 0.0), fov_deg=40.0, layers=6):
    """Reset, let `build(bpy)` add objects, add a camera, render and trace."""
    reset_scene(RES, samples=4, threads=2, transparent=True)
    build(bpy)
    add_camera(np.array(camera_at), np.array(look), math.radians(fov_deg))
    return render_and_trace(layers, [])


def centre_ray_distances(sample):
    """Distances of the four pixels around the image centre, (L, 4)."""
    c = RES // 2
    return sample.distance[:, c - 1 : c + 1, c - 1 : c + 1].reshape(sample.distance.shape[0], -1)


def test_sphere_gives_two_hits_at_analytic_depths(blender):
    """A closed sphere is crossed twice (enter, exit) at the distances of the ray-sphere solution."""
    s = trace_scene(blender, lambda bpy: bpy.ops.mesh.primitive_uv_sphere_add(radius=0.5, segments=128, ring_count=64))
    d = s.distance
    hit = d[0] > 0
    assert hit.sum() > 0.1 * RES * RES
    assert np.all(d[1][hit] > d[0][hit]) and not d[2].any()
    # exact ray-sphere crossings for every pixel's ray (faceting of the mesh costs < 1e-3 relative)
    from core.geometry.points import pixel_rays

    rays = pixel_rays(torch.from_numpy(s.intrinsics).double(), RES, RES).numpy()
    rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
    origin_cam = -s.cam_to_world[:3, :3].T @ s.cam_to_world[:3, 3]  # sphere centre in camera space
    b = rays @ origin_cam
    disc = b**2 - (origin_cam @ origin_cam - 0.25)
    inner = disc > 0.02  # away from the silhouette, where facets decide
    near, far = b - np.sqrt(np.maximum(disc, 0)), b + np.sqrt(np.maximum(disc, 0))
    np.testing.assert_allclose(d[0][inner], near[inner], rtol=2e-3)
    np.testing.assert_allclose(d[1][inner], far[inner], rtol=2e-3)


def test_nested_boxes_give_four_hits(blender):
    """A box inside a box: the central rays cross four faces at the known distances."""

    def build(bpy):
        bpy.ops.mesh.primitive_cube_add(size=2.0)
        bpy.ops.mesh.primitive_cube_add(size=1.0)

    s = trace_scene(blender, build, camera_at=(0.0, -5.0, 0.0))
    d = centre_ray_distances(s)
    # the four central rays are nearly on-axis: distances 4, 4.5, 5.5, 6 up to their tilt
    tilt = 1 / np.cos(
        np.arctan(0.5 / (RES / 2 / np.tan(np.radians(20))))
    )  # off-axis factor of the nearest pixel centre
    for k, expected in enumerate([4.0, 4.5, 5.5, 6.0]):
        assert np.all(d[k] >= expected - 1e-4) and np.all(d[k] <= expected * tilt * 1.001)
    assert not d[4:].any()
    counts = (s.distance > 0).sum(axis=0)
    assert set(np.unique(counts)) <= {0, 2, 4}


def test_plane_gives_one_hit(blender):
    """A single plane facing the camera gives exactly one layer, at distance / cos(ray angle)."""
    s = trace_scene(blender, lambda bpy: bpy.ops.mesh.primitive_plane_add(size=10.0, rotation=(math.pi / 2, 0, 0)))
    assert (s.distance[0] > 0).all() and not s.distance[1:].any()
    from core.geometry.points import pixel_rays

    rays = pixel_rays(torch.from_numpy(s.intrinsics).double(), RES, RES).numpy()
    expected = 3.0 * np.linalg.norm(rays, axis=-1)  # z = 3 for every pixel
    np.testing.assert_allclose(s.distance[0], expected, rtol=1e-5)


def test_camera_inside_closed_object_is_skipped(blender):
    """A camera inside a closed box sees only back faces: the sample is skipped with a reason."""
    with pytest.raises(SkipSample, match="inside"):
        trace_scene(blender, lambda bpy: bpy.ops.mesh.primitive_cube_add(size=4.0), camera_at=(0.0, 0.0, 0.0))


@pytest.fixture(scope="module")
def random_samples():
    cfg = GenerateConfig(out="unused", count=4, seed=5, resolution=RES, render_samples=8, workers=1)
    return [make_sample(cfg, i, [], 2, []) for i in range(3)]


def test_layers_are_front_to_back(random_samples):
    """In random scenes every further layer lies behind the previous one."""
    for s in random_samples:
        d = s["distance"]
        both = d[1:] > 0
        assert np.all(d[1:][both] > d[:-1][both])
        assert not np.any((d[1:] > 0) & (d[:-1] == 0))


def test_layer0_coverage_matches_render_alpha(random_samples):
    """The first-hit mask equals the rendered alpha (> 50%) on at least 99% of pixels."""
    for s in random_samples:
        agree = ((s["alpha"] > 127) == (s["distance"][0] > 0)).mean()
        assert agree >= 0.99, agree


def test_sample_is_deterministic_for_a_seed(random_samples):
    """Sample (seed, index) is rebuilt identically: same geometry, same pixels."""
    cfg = GenerateConfig(out="unused", count=4, seed=5, resolution=RES, render_samples=8, workers=1)
    again = make_sample(cfg, 1, [], 2, [])
    np.testing.assert_array_equal(again["distance"], random_samples[1]["distance"])
    np.testing.assert_array_equal(again["rgb"], random_samples[1]["rgb"])
    assert again["meta"] == random_samples[1]["meta"]


@pytest.mark.parametrize("seed, kind", [(0, "room"), (2, "outdoor")])
def test_scene_mode_renders_rooms_and_streets_with_their_sky(seed, kind):
    """Scene mode (seed 0 draws a room, 2 a street): the render is opaque (what no surface covers shows
    the world's sky, not a transparent background); a room surrounds the camera and its walls have two
    faces; a street's ground fills the bottom row and reaches tens of metres."""
    cfg = GenerateConfig(out="unused", count=1, seed=seed, resolution=RES, render_samples=4, workers=1, mode="scene")
    s = make_sample(cfg, 0, [], 2, [])
    assert s["meta"]["mode"] == "scene" and s["meta"]["kind"] == kind and (s["alpha"] == 255).all()
    if kind == "room":
        assert (s["distance"][0] > 0).mean() > 0.6 and (s["distance"][1] > 0).mean() > 0.5
    else:
        assert (s["distance"][0, -1] > 0).all() and s["distance"][0].max() > 20


@pytest.fixture(scope="module")
def shard_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    cfg = GenerateConfig(out=str(out), count=3, seed=9, resolution=32, render_samples=4, workers=1, shard_size=2)
    assert generate(cfg, progress=False) == 3
    return out, cfg


def test_layer0_points_project_to_pixel_centres(shard_folder):
    """Points rebuilt from the shards project with their intrinsics onto their own pixel centres."""
    reader = ShardReader(shard_folder[0])
    b = reader.batch(range(len(reader)))
    p, K, valid = b["points"][:, 0], b["intrinsics"], b["valid"][:, 0]
    u = p[..., 0] / p[..., 2] * K[:, 0, 0, None, None] + K[:, 0, 2, None, None]
    v = p[..., 1] / p[..., 2] * K[:, 1, 1, None, None] + K[:, 1, 2, None, None]
    rows, cols = torch.meshgrid(torch.arange(32) + 0.5, torch.arange(32) + 0.5, indexing="ij")
    assert valid.any()
    assert (u - cols)[valid].abs().max() < 1e-3 and (v - rows)[valid].abs().max() < 1e-3


def test_shards_hold_every_sample_with_metadata(shard_folder):
    """Two shards (2 + 1 samples) with float16 distances, settings and one description per sample."""
    out, cfg = shard_folder
    with np.load(shard_path(out, 0)) as f:
        assert f["distance"].dtype == np.float16
        assert f["distance"].shape == (cfg.shard_size, cfg.layers, cfg.resolution, cfg.resolution)
        meta = json.loads(str(f["meta"]))
    assert meta["seed"] == cfg.seed and len(meta["samples"]) == cfg.shard_size
    reader = ShardReader(out)
    assert len(reader) == cfg.count and list(reader.index) == list(range(cfg.count))
    b = reader.batch([0, 2], num_layers=4)
    R = cfg.resolution
    assert b["image"].shape == (2, 3, R, R) and b["points"].shape == (2, 4, R, R, 3)


def test_generate_resumes_and_refuses_other_settings(shard_folder):
    """A rerun renders only missing shards; a different seed into the same folder is refused."""
    out, cfg = shard_folder
    before = shard_path(out, 0).stat().st_mtime_ns
    shard_path(out, 1).unlink()
    assert generate(cfg, progress=False) == 1
    assert shard_path(out, 0).stat().st_mtime_ns == before and shard_path(out, 1).exists()
    with pytest.raises(ValueError, match="other settings"):
        generate(GenerateConfig(out=str(out), count=3, seed=10, resolution=32, workers=1, shard_size=2), progress=False)


def test_machines_write_disjoint_parts_of_one_data_set(shard_folder, tmp_path):
    """Two machines (--shard-index 0 and 1 of --num-shards 2) fill one folder with exactly the shards
    one machine writes, sample for sample; the family option restricts every part's family."""
    out, cfg = shard_folder
    shared = tmp_path / "shared"
    for index in (1, 0):
        args = ["-m", "core", "generate", "--out", str(shared), "--count", str(cfg.count), "--seed", str(cfg.seed),
                "--resolution", str(cfg.resolution), "--render-samples", str(cfg.render_samples), "--workers", "1",
                "--shard-size", str(cfg.shard_size), "--shard-index", str(index), "--num-shards", "2"]  # fmt: skip
        result = run_python(args)
        assert result.returncode == 0, result.stderr[-2000:]
        assert sorted(p.name for p in shared.glob("shard_*.npz"))[-1] == "shard_00001.npz"
        assert (index == 1) == (not shard_path(shared, 0).exists())
    for shard in (0, 1):
        with np.load(shard_path(out, shard)) as one, np.load(shard_path(shared, shard)) as two:
            assert all(np.array_equal(one[k], two[k]) for k in ("rgb", "alpha", "distance", "index"))
    with pytest.raises(ValueError, match="shard index"):
        GenerateConfig(out="unused", count=3, shard_index=2, num_shards=2)
    creatures = GenerateConfig(out=str(tmp_path / "held_out"), count=3, seed=2, resolution=24, render_samples=2,
                               workers=1, shard_size=3, families=["creature"])  # fmt: skip
    assert generate(creatures, progress=False) == 3
    with np.load(shard_path(creatures.out, 0)) as f:
        parts = [p for sample in json.loads(str(f["meta"]))["samples"] for p in sample["parts"]]
    assert parts and set(parts) == {"creature"}


def test_bad_assets_are_skipped_with_a_reason(tmp_path):
    """Unreadable assets are logged and left out (a scene left empty is redrawn); the run still completes."""
    assets = tmp_path / "assets"
    assets.mkdir()
    (assets / "broken.obj").write_text("this is not an obj file\nv 1 2\nf 1 2 3\n")
    (assets / "garbage.glb").write_bytes(b"\x00\x01not a gltf")
    (assets / "notes.txt").write_text("ignored: not an asset suffix")
    cfg = GenerateConfig(
        out=str(tmp_path / "out"),
        count=6,
        seed=1,
        resolution=24,
        render_samples=2,
        workers=1,
        shard_size=6,
        assets=str(assets),
    )
    assert generate(cfg, progress=False) == 6
    log = (tmp_path / "out" / "generate.log").read_text()
    assert "skipped asset" in log


def test_preview_sheet_shows_rgb_alpha_and_layers(shard_folder, tmp_path):
    """The contact sheet has one row per sample and a column per layer."""
    from PIL import Image

    path = tmp_path / "preview.png"
    preview_sheet(ShardReader(shard_folder[0]), path, count=3)
    w, h = Image.open(path).size
    assert w > 8 * 32 and h > 3 * 32
