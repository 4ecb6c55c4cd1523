"""The layered point map type, its .npz format, forward fill and coordinate normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.geometry.points import (
    PointNormalization,
    collapsed_layers_to_valid,
    forward_fill_layers,
    pixel_rays,
    ray_distance_to_points,
)
from core.layered import LayeredFileError, LayeredPointMap


def example(L=3, H=5, W=7, seed=0) -> LayeredPointMap:
    rng = np.random.default_rng(seed)
    valid = np.zeros((L, H, W), bool)
    counts = rng.integers(0, L + 1, size=(H, W))
    for k in range(L):
        valid[k] = counts > k
    z = np.cumsum(rng.uniform(0.1, 1.0, (L, H, W)), axis=0) + 1.0
    points = np.stack([rng.normal(size=(L, H, W)), rng.normal(size=(L, H, W)), z], -1) * valid[..., None]
    K = np.array([[5.0, 0, W / 2], [0, 5.0, H / 2], [0, 0, 1]])
    return LayeredPointMap(points, valid, K, rng.integers(0, 255, (H, W, 3), dtype=np.uint8))


def test_npz_round_trip_keeps_every_array(tmp_path):
    """Saving and loading gives the same arrays, extras included, with the contract's dtypes."""
    lpm = example()
    lpm.extras["samples_points"] = np.stack([lpm.points, lpm.points])
    lpm.save(tmp_path / "a.npz")
    back = LayeredPointMap.load(tmp_path / "a.npz")
    for key in ("points", "valid", "intrinsics", "image"):
        np.testing.assert_array_equal(getattr(back, key), getattr(lpm, key))
    assert back.points.dtype == np.float32 and back.valid.dtype == bool and back.image.dtype == np.uint8
    np.testing.assert_array_equal(back.extras["samples_points"], lpm.extras["samples_points"])


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a.pop("valid"), "missing arrays"),
        (lambda a: a.update(points=a["points"].astype(np.float64)), "'points' must be float32"),
        (lambda a: a.update(valid=a["valid"][:, :-1]), "valid must be"),
        (lambda a: a.update(image=a["image"][..., :2]), "image must be"),
        (lambda a: a.update(intrinsics=np.zeros((3, 3), np.float32)), "positive focal"),
        (lambda a: a["valid"].__setitem__((slice(None), 0, 0), [False, True, True]), "front to back"),
    ],
)
def test_malformed_files_are_rejected_with_the_reason(tmp_path, change, message):
    """Each kind of malformed file fails to load with a message naming the problem."""
    lpm = example()
    arrays = {"points": lpm.points, "valid": lpm.valid.copy(), "intrinsics": lpm.intrinsics, "image": lpm.image}
    change(arrays)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(LayeredFileError, match=message):
        LayeredPointMap.load(tmp_path / "bad.npz")


def test_non_npz_and_pickled_files_are_refused(tmp_path):
    """A text file and an object array (which would need unpickling) are both refused."""
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(LayeredFileError, match="not a readable"):
        LayeredPointMap.load(tmp_path / "text.npz")
    lpm = example()
    np.savez(
        tmp_path / "pickle.npz",
        points=np.array([lpm.points], dtype=object),
        valid=lpm.valid,
        intrinsics=lpm.intrinsics,
        image=lpm.image,
    )
    with pytest.raises(LayeredFileError):
        LayeredPointMap.load(tmp_path / "pickle.npz")


def test_forward_fill_and_collapse_are_inverse():
    """Forward filling repeats the last surface; the collapse test recovers the original validity."""
    lpm = example(L=4, H=9, W=11)
    pts, valid = torch.from_numpy(lpm.points), torch.from_numpy(lpm.valid)
    filled = forward_fill_layers(pts, valid)
    for k in range(1, 4):
        gone = valid[k - 1] & ~valid[k]
        assert torch.equal(filled[k][gone], filled[k - 1][gone])
    assert torch.equal(filled[valid], pts[valid])
    assert torch.equal(collapsed_layers_to_valid(filled, valid[0]), valid)


@pytest.mark.parametrize("mode", ["zscore", "log_median"])
def test_normalisation_has_an_exact_inverse(mode):
    """normalize then denormalize returns the points (float64 to 1e-12), for both released modes."""
    lpm = example(L=2, H=6, W=6)
    pts = torch.from_numpy(lpm.points).double()[None]
    valid = torch.from_numpy(lpm.valid)[None]
    norm = PointNormalization(mode)
    scale = norm.scale(pts, valid)
    back = norm.denormalize(norm.normalize(pts, scale), scale)
    torch.testing.assert_close(back[valid], pts[valid], rtol=1e-12, atol=1e-12)
    if mode == "log_median":
        z = pts[..., 2][valid]
        assert torch.isclose(scale[0], z.median() if len(z) % 2 else z.sort().values[len(z) // 2 - 1])


def test_log_median_is_scale_invariant():
    """Scaling a scene leaves its log-median coordinates unchanged (relative geometry)."""
    lpm = example(L=2, H=6, W=6)
    pts, valid = torch.from_numpy(lpm.points)[None].double(), torch.from_numpy(lpm.valid)[None]
    norm = PointNormalization("log_median")
    a = norm.normalize(pts, norm.scale(pts, valid))
    b = norm.normalize(3.7 * pts, norm.scale(3.7 * pts, valid))
    torch.testing.assert_close(a[valid], b[valid])


def test_ray_distances_give_pixel_aligned_points():
    """Points at any distance along pixel rays project back onto their pixel centres."""
    K = torch.tensor([[30.0, 0, 17.3], [0, 28.0, 12.1], [0, 0, 1]], dtype=torch.float64)
    rays = pixel_rays(K, 24, 32)
    pts = ray_distance_to_points(torch.rand(24, 32, dtype=torch.float64) * 5 + 0.5, rays)
    u = pts[..., 0] / pts[..., 2] * 30.0 + 17.3
    v = pts[..., 1] / pts[..., 2] * 28.0 + 12.1
    rows, cols = torch.meshgrid(torch.arange(24) + 0.5, torch.arange(32) + 0.5, indexing="ij")
    torch.testing.assert_close(u, cols.double())
    torch.testing.assert_close(v, rows.double())
