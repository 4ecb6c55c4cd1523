"""The far limit (core.geometry.far_limit): points beyond N × the median visible depth go, the rest stay."""

import numpy as np
import pytest
from conftest import plane_points

from core.geometry.far_limit import far_limit


def test_far_points_go_with_the_layers_behind_them():
    """A room-like map at depth 2 with a patch of 'sky' at depth 100: at factor 8 the sky goes from layer 0
    and the layer behind it, every nearer point stays; factor 0 is off; a negative factor is refused."""
    depth = np.full((12, 16), 2.0)
    depth[:3, 4:10] = 100.0
    front = plane_points(depth)
    back = plane_points(depth + 0.5)
    points, valid = np.stack([front, back])[None], np.ones((1, 2, 12, 16), bool)  # one sample, two layers
    kept = far_limit(points, valid, 8.0)
    sky = depth == 100.0
    assert not kept[0, :, sky].any() and kept[0, :, ~sky].all()
    assert far_limit(points, valid, 0.0) is valid
    with pytest.raises(ValueError, match="at least 0"):
        far_limit(points, valid, -1.0)
