"""The SurfaceNet: the visible layer's profile the anchored sampler restarts from, and its trainer."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import small_config, train_anchor_net, write_sphere_shards

from core.data.shards import ShardReader
from core.geometry.points import PointNormalization, pixel_rays
from core.geometry.silhouette import distance_to_background, inflate, round_profile
from core.inference import predict
from core.model.loading import load_model
from core.model.surface import SurfaceNet
from core.model.wtdit import WTDiT
from core.sampling import SampleConfig
from core.train.surface import aligned_front_error, surface_batch, surface_error, train_surface


def disc(size: int = 32) -> torch.Tensor:
    """[1, size, size] bool: an off-centre disc with a notch."""
    v, u = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    mask = (u - 14) ** 2 + (v - 17) ** 2 < 10**2
    mask[10:14, 14:] = False
    return mask[None]


def test_an_untrained_surface_net_is_the_round_inflation():
    """The last convolution starts at zero: the profile is the round one, zero on the background, and
    the front it implies is exactly silhouette inflation's."""
    torch.manual_seed(0)
    net = SurfaceNet(8)
    foreground = disc()
    profile = net(torch.rand(1, 3, 32, 32), foreground)
    rho, _ = round_profile(distance_to_background(foreground))
    torch.testing.assert_close(profile, rho)
    assert (profile[~foreground] == 0).all() and (profile[foreground] > 0).all()
    torch.testing.assert_close(inflate(foreground, 30.0, 2.0, profile=profile), inflate(foreground, 30.0, 2.0))


def test_aligned_front_error_ignores_scale_and_z_shift_and_scores_shape():
    """A truth that is the profile's own front, scaled and shifted in z, scores 0; the round profile
    against a flattened truth does not."""
    foreground = disc()
    distance = distance_to_background(foreground)
    rho, _ = round_profile(distance)
    K = torch.tensor([[[30.0, 0, 16], [0, 30.0, 16], [0, 0, 1]]])
    r = distance.max()
    front = (1 - rho * r / 30.0)[..., None] * pixel_rays(K, 32, 32)  # the profile's front at depth 1
    truth = front * 2.5 + torch.tensor([0.0, 0.0, 0.7])
    assert float(aligned_front_error(rho, distance, truth, foreground, K)[0]) < 1e-5
    flat = (1 - 0.3 * rho * r / 30.0)[..., None] * pixel_rays(K, 32, 32) * 2.5
    assert float(aligned_front_error(rho, distance, flat, foreground, K)[0]) > 1e-3


def test_surface_batches_mirror_image_truth_and_camera_together(tmp_path):
    """A mirrored batch is the same scene seen in a mirror: the round profile scores the same."""
    reader = ShardReader(write_sphere_shards(tmp_path, 4))
    model = WTDiT(dataclasses.replace(small_config(), surface_width=8))
    plain, mirrored = surface_batch(reader, [0, 1, 2]), surface_batch(reader, [0, 1, 2], mirror=True)
    torch.testing.assert_close(mirrored["image"], plain["image"].flip(-1))
    torch.testing.assert_close(
        surface_error(model, mirrored, untrained=True), surface_error(model, plain, untrained=True)
    )


def test_every_frame_of_a_clip_shard_is_a_surface_sample(tmp_path):
    """Clip shards (`generate --frames T`) train the SurfaceNet frame by frame: a clip of six sphere
    images (one camera, as a clip has) gives the batch those six images give as stills."""
    import numpy as np

    stills = ShardReader(write_sphere_shards(tmp_path / "stills", 6, shard_size=6))
    clip = {k: getattr(stills, k)[None] for k in ("rgb", "alpha", "distance", "cam_to_world")}
    clip |= {"intrinsics": stills.intrinsics[:1], "index": np.zeros(1, np.int64), "meta": np.array("{}")}
    (tmp_path / "clips").mkdir()
    np.savez_compressed(tmp_path / "clips" / "shard_00000.npz", **clip)
    clips = ShardReader(tmp_path / "clips")
    assert clips.frames == 6 and len(clips) == 1
    framed, plain = surface_batch(clips, [0], mirror=True), surface_batch(stills, range(6), mirror=True)
    assert framed.keys() == plain.keys()
    for key in plain:
        torch.testing.assert_close(framed[key], plain[key])


def test_training_the_surface_learns_and_each_stretch_adds_to_the_last(random_checkpoint, tmp_path):
    """From a checkpoint without a SurfaceNet: one grows (the rest of the weights kept), training on
    spheres brings the held-out error below the round inflation's, and the checkpoint records it. A
    second stretch starts from the first's SurfaceNet and appends its record."""
    data = write_sphere_shards(tmp_path / "train", 32)
    val = write_sphere_shards(tmp_path / "val", 8, seed=1)
    first, model, card = train_anchor_net(random_checkpoint, data, val, tmp_path / "a.safetensors", 60, 30)
    assert model.cfg.surface_width == 8 and model.surface is not None
    (record,) = card.info["surface"]
    assert record["steps"] == 60 and record["validation"][0]["step"] == 0
    end = record["validation"][-1]
    assert end["abs_rel"] < 0.8 * end["inflation"], record["validation"]

    second = dataclasses.replace(first, init=first.out, out=str(tmp_path / "b.safetensors"), steps=0)
    train_surface(second, log=lambda _: None)
    again, _, card = load_model(second.out)
    assert [r["steps"] for r in card.info["surface"]] == [60, 0]
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(again.state_dict()[name], tensor)


@torch.no_grad()
def test_the_anchored_visible_layer_takes_the_surface_nets_profile():
    """Anchored at 0, layer 0 ends exactly at its anchor: a model with an untrained SurfaceNet samples
    what the same weights without one sample; bending the profile moves layer 0 and only through it."""
    torch.manual_seed(0)
    plain = WTDiT(small_config()).eval()
    torch.nn.init.normal_(plain.head.out.weight, std=0.05)
    shaped = WTDiT(dataclasses.replace(small_config(), surface_width=8)).eval()
    shaped.load_state_dict(plain.state_dict(), strict=False)
    image, foreground = torch.rand(1, 3, 32, 32), disc()
    cfg = SampleConfig(steps=4, anchor=0.0)
    normalization = PointNormalization("zscore")
    a = predict(plain, normalization, image, foreground, cfg, seed=3)
    b = predict(shaped, normalization, image, foreground, cfg, seed=3)
    torch.testing.assert_close(a.points, b.points)
    assert shaped.surface is not None
    torch.nn.init.constant_(shaped.surface.out.bias, 0.5)
    c = predict(shaped, normalization, image, foreground, cfg, seed=3)
    moved = (c.points[0, 0] - a.points[0, 0]).norm(dim=-1)[foreground[0]]
    assert float(moved.mean()) > 1e-3


@pytest.mark.parametrize("width", [-8, 12])
def test_a_surface_width_that_is_not_a_multiple_of_8_is_refused(width):
    with pytest.raises(ValueError, match="surface_width"):
        dataclasses.replace(small_config(), surface_width=width)
