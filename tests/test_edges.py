"""The edge filter (core.geometry.edges): flying pixels between the surfaces of a depth edge go, surfaces stay."""

import numpy as np
import pytest
from conftest import BACK, FRONT, plane_points, step_edge_map

from core.geometry.edges import edge_filter


@pytest.mark.parametrize("block", [1, 4])
def test_flying_pixels_at_a_step_edge_go_and_both_surfaces_stay(block):
    """No point is left between the front (z = 1) and back (z = 3) plane; each plane loses at most the two
    columns at the edge, also when the map is a nearest-neighbour upsample (blocks of equal depth)."""
    lpm = step_edge_map(block)
    valid = edge_filter(lpm.points, lpm.valid)[0]
    z = lpm.points[0, ..., 2]
    assert not (valid & (z > FRONT + 0.01) & (z < BACK - 0.01)).any()
    for depth in (FRONT, BACK):
        plane, kept = (z == depth).all(axis=0), ((z == depth) & valid).all(axis=0)  # per column
        assert kept.sum() >= plane.sum() - 2 * block


def test_a_clean_edge_and_a_thin_pole_lose_nothing():
    """Where depths jump without a ramp, both sides survive; so does a one-pixel pole in front of the back
    plane (nearer than both its neighbours, not between two surfaces)."""
    depth = np.full((8, 16), BACK)
    depth[:, :6] = FRONT
    depth[:, 11] = FRONT
    valid = np.ones((1, 8, 16), bool)
    assert edge_filter(plane_points(depth)[None], valid).all()


def test_strength_zero_is_off():
    lpm = step_edge_map()
    np.testing.assert_array_equal(edge_filter(lpm.points, lpm.valid, 0.0), lpm.valid)
    assert edge_filter(lpm.points, lpm.valid, 0.0) is lpm.valid
    with pytest.raises(ValueError, match="at least 0"):
        edge_filter(lpm.points, lpm.valid, -1.0)


def test_a_smooth_slanted_plane_loses_nothing_at_the_default_strength():
    """A plane slanted 39° sideways and 17° up (z = 2 + 0.8 x + 0.3 y) across a 53° field of view keeps every
    point at strength 1; a much stricter filter (4) starts taking its steepest part, never adding any."""
    H, W, focal = 48, 64, 64.0
    v, u = (np.mgrid[0:H, 0:W] + 0.5 - np.array([H / 2, W / 2])[:, None, None]) / focal
    depth = 2.0 / (1.0 - 0.8 * u - 0.3 * v)  # the plane's depth along each pixel's ray
    points, valid = plane_points(depth, focal)[None], np.ones((1, H, W), bool)
    assert edge_filter(points, valid).all()
    strict = edge_filter(points, valid, 4.0)
    assert 0 < (~strict).sum() and not (strict & ~valid).any()


def test_traces_are_filtered_at_the_model_resolution_and_upsampled_without_the_flying_blocks():
    """restore_layers with the filter's verdict at the model's resolution: upsampled 4× to the input, the
    flying model pixels are dropped with every input pixel they cover, in every layer behind them too and
    in every sample, both planes keep their pixels, and the points stay on their pixels' rays."""
    import torch

    from core.imageio import ImageBox
    from core.inference import restore_layers

    one = step_edge_map()  # the model's 8×16 prediction: a step edge with a ramp of flying pixels
    back = plane_points(np.full(one.valid.shape[1:], 5.0), float(one.intrinsics[0, 0]))[None]
    points = np.stack([np.concatenate([one.points, back])] * 2)  # [K=2, L=2, 8, 16, 3]
    points[1] = points[1, :, :, ::-1]  # sample 1: the edge mirrored
    valid = np.ones(points.shape[:-1], bool)
    kept = edge_filter(points, valid)
    np.testing.assert_array_equal(kept[:, 1], kept[:, 0])  # the back plane loses what the front layer lost
    assert kept.sum() < valid.sum()
    scale = 4
    H, W = 8 * scale, 16 * scale
    K = np.array([[10.0 * scale, 0, W / 2], [0, 10.0 * scale, H / 2], [0, 0, 1]], np.float32)
    box = ImageBox(1 / scale, 1 / scale, 0.0, 0.0)
    out_points, out_valid = restore_layers(
        torch.from_numpy(points), torch.from_numpy(valid), box, K, np.ones((H, W), bool), torch.from_numpy(kept)
    )
    blocks = np.repeat(np.repeat(kept, scale, axis=-2), scale, axis=-1)
    np.testing.assert_array_equal(out_valid.numpy(), blocks)  # each model pixel's verdict on its block
    z = out_points[..., 2].numpy()
    assert not z[~blocks].any() and ((z[0, 0] == FRONT) | (z[0, 0] == BACK) | ~blocks[0, 0]).all()
    assert (z[0, 0] == FRONT).sum() >= (6 - 1) * scale * H and (z[0, 0] == BACK).sum() >= (7 - 1) * scale * H
