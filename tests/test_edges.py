"""The edge filter (core.geometry.edges): flying pixels between the surfaces of a depth edge go, surfaces stay."""

import numpy as np
import pytest
from conftest import BACK, FRONT, plane_points, step_edge_map

from core.geometry.edges import edge_filter, edge_filtered
from core.layered import LayeredPointMap


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
    assert edge_filtered(lpm, 0.0) is lpm
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


def test_filtered_maps_keep_the_format_and_their_samples_agree():
    """A pixel dropped in layer 0 is dropped behind it too (layers stay filled front to back), points are zero
    where not valid, and sample 0 stays the main result."""
    one = step_edge_map()
    back = plane_points(np.full(one.valid.shape[1:], 5.0), float(one.intrinsics[0, 0]))[None]
    points, valid = np.concatenate([one.points, back]), np.ones((2, *one.valid.shape[1:]), bool)
    samples_points, samples_valid = np.stack([points, points[:, :, ::-1]]), np.stack([valid, valid])
    lpm = LayeredPointMap(
        points, valid, one.intrinsics, one.image, {"samples_points": samples_points, "samples_valid": samples_valid}
    )
    out = edge_filtered(lpm)
    np.testing.assert_array_equal(out.valid[1], out.valid[0])  # the back plane itself has no edge
    assert out.valid.sum() < lpm.valid.sum() and not out.points[~out.valid].any()
    np.testing.assert_array_equal(out.extras["samples_points"][0], out.points)
    np.testing.assert_array_equal(out.extras["samples_valid"][0], out.valid)
    np.testing.assert_array_equal(out.extras["samples_valid"][1], out.valid[:, :, ::-1])
