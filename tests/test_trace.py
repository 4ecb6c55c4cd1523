"""`python -m core trace`: the output contract, samples, official checkpoints, and clear errors."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch
from conftest import DATA, ROOT, small_config
from PIL import Image

from core.geometry.points import PointNormalization
from core.imageio import prepare_image, read_image
from core.inference import trace_image
from core.layered import LayeredPointMap
from core.model.checkpoint import save_checkpoint
from core.model.loading import load_model
from core.model.official import ours_to_official
from core.model.wtdit import WTDiT
from core.sampling import SampleConfig


def run_trace(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "core", "trace", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_trace_writes_the_contract_at_the_input_resolution(random_checkpoint, tmp_path):
    """points (L,H,W,3) float32, valid (L,H,W), intrinsics (3,3) and the input image, at the input's H×W.
    (The edge filter is off: the random model's depths are noise, which it would thin out.)"""
    out = tmp_path / "out.npz"
    result = run_trace(
        str(DATA / "object_rgba.png"),
        "--out",
        str(out),
        "--checkpoint",
        str(random_checkpoint),
        "--steps",
        "3",
        "--samples",
        "2",
        "--device",
        "cpu",
        "--edge-filter",
        "0",
    )
    assert result.returncode == 0, result.stderr
    lpm = LayeredPointMap.load(out)
    rgba = read_image(DATA / "object_rgba.png")
    H, W = rgba.shape[:2]
    L = load_model(random_checkpoint, "cpu")[0].cfg.num_layers
    assert lpm.points.shape == (L, H, W, 3) and lpm.points.dtype == np.float32
    assert lpm.valid.shape == (L, H, W) and lpm.intrinsics.shape == (3, 3)
    np.testing.assert_array_equal(lpm.image, rgba[..., :3])
    assert lpm.extras["samples_points"].shape == (2, L, H, W, 3)
    np.testing.assert_array_equal(lpm.extras["samples_points"][0], lpm.points)
    alpha = rgba[..., 3] > 127
    assert lpm.valid[0].sum() > 0.9 * alpha.sum() and not lpm.valid[0][~alpha].any()
    K = lpm.intrinsics
    p = lpm.points[0][lpm.valid[0]]
    rows, cols = np.nonzero(lpm.valid[0])
    np.testing.assert_allclose(p[:, 0] / p[:, 2] * K[0, 0] + K[0, 2], cols + 0.5, atol=1e-3)
    np.testing.assert_allclose(p[:, 1] / p[:, 2] * K[1, 1] + K[1, 2], rows + 0.5, atol=1e-3)


def test_the_edge_filter_is_on_by_default_and_keeps_a_subset(random_checkpoint, tmp_path):
    """By default `trace` drops flying points: its valid set (and each sample's) is a strict subset of
    `--edge-filter 0`'s, with the same camera, the same points where kept and zeros elsewhere."""
    maps = {}
    for extra in ([], ["--edge-filter", "0"]):
        out = tmp_path / f"trace{len(extra)}.npz"
        args = ["--checkpoint", str(random_checkpoint), "--steps", "2", "--samples", "2", "--device", "cpu", *extra]
        result = run_trace(str(DATA / "object_rgba.png"), "--out", str(out), *args)
        assert result.returncode == 0, result.stderr
        maps[bool(extra)] = LayeredPointMap.load(out)  # the contract's keys, dtypes and ranks
    on, off = maps[False], maps[True]
    assert on.points.dtype == np.float32 and on.points.shape == off.points.shape and on.valid.dtype == bool
    np.testing.assert_array_equal(on.image, off.image)
    np.testing.assert_array_equal(on.intrinsics, off.intrinsics)
    assert on.valid.sum() < off.valid.sum() and not (on.valid & ~off.valid).any()
    np.testing.assert_array_equal(on.points, off.points * on.valid[..., None])
    np.testing.assert_array_equal(on.extras["samples_points"][0], on.points)
    on_samples, off_samples = on.extras["samples_valid"], off.extras["samples_valid"]
    assert on_samples[1].sum() < off_samples[1].sum() and not (on_samples & ~off_samples).any()
    np.testing.assert_array_equal(on_samples, np.logical_and.accumulate(on_samples, axis=1))  # filled front to back


def png_claiming(path, width: int, height: int):
    """A tiny PNG whose header claims width×height pixels (a decompression bomb: refused unread)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )
    return path


def test_bad_arguments_exit_with_one_clear_line(random_checkpoint, tmp_path):
    """A decompression bomb, --out naming a folder, an unknown device, zero or negative samples: exit 2,
    one line naming the file or argument, no traceback, nothing written."""
    bomb = png_claiming(tmp_path / "bomb.png", 30000, 30000)
    image = str(DATA / "object_rgba.png")
    cases = [
        ([str(bomb)], "too large"),
        ([image, "--device", "tpu"], "tpu"),
        ([image, "--samples", "0"], "--samples"),
        ([image, "--samples", "-1"], "--samples"),
        ([image, "--steps", "0"], "--steps"),
        ([image, "--edge-filter", "-1"], "--edge-filter"),
        ([image, "--anchor", "1"], "--anchor"),
        ([image, "--anchor", "soon"], "--anchor"),
    ]
    for args, message in cases:
        out = tmp_path / "out.npz"
        result = run_trace(*args, "--out", str(out), "--checkpoint", str(random_checkpoint))
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, (
            args,
            result.stderr,
        )
        assert not out.exists()
    folder = tmp_path / "a folder"
    folder.mkdir()
    result = run_trace(image, "--out", str(folder), "--checkpoint", str(random_checkpoint))
    assert result.returncode == 2 and "is a folder" in result.stderr and not any(folder.iterdir())


def test_float_images_in_zero_to_one_are_read_as_such(tmp_path):
    """A 32-bit float TIFF holding [0, 1] reads as the 8-bit image it encodes, not as black."""
    grey = np.asarray(Image.open(DATA / "grey.png").convert("L"))
    Image.fromarray(grey.astype(np.float32) / 255.0, mode="F").save(tmp_path / "float.tif")
    rgba = read_image(tmp_path / "float.tif")
    assert np.abs(rgba[..., 0].astype(int) - grey).max() <= 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.png"], "image not found"),
        ([str(DATA / "not_an_image.png")], "not a readable image"),
        ([str(DATA / "transparent.png")], "no foreground"),
        ([str(DATA / "object_rgba.png"), "--checkpoint", "missing.safetensors"], "checkpoint not found"),
        ([str(DATA / "object_rgba.png"), "--checkpoint", str(DATA / "not_an_image.png")], "cannot be read"),
        ([str(DATA / "object_rgba.png"), "--device", "cuda"], "CUDA"),
    ],
)
def test_bad_input_exits_with_a_clear_message(random_checkpoint, tmp_path, args, message):
    """Every kind of bad input ends with exit code 2 and a one-line reason, and no output file."""
    if "--checkpoint" not in args:
        args = args + ["--checkpoint", str(random_checkpoint)]
    out = tmp_path / "out.npz"
    result = run_trace(*args, "--out", str(out), "--steps", "1")
    assert result.returncode == 2 and message in result.stderr and not out.exists()


def test_a_frame_of_one_colour_is_refused_in_scene_mode(random_checkpoint, tmp_path):
    """An all-sky (or blank) frame has nothing to trace: scene mode exits 2 with one line, writing nothing;
    the same colour with an object's alpha is an object (its silhouette is the cue)."""
    sky = np.zeros((48, 64, 4), np.uint8)
    sky[...] = (120, 170, 230, 255)
    Image.fromarray(sky).save(tmp_path / "sky.png")
    out = tmp_path / "out.npz"
    result = run_trace(str(tmp_path / "sky.png"), "--mode", "scene", "--out", str(out), "--checkpoint",
                       str(random_checkpoint), "--steps", "1")  # fmt: skip
    assert result.returncode == 2 and "one colour" in result.stderr and not out.exists(), result.stderr
    sky[:, :20, 3] = 0
    Image.fromarray(sky).save(tmp_path / "object.png")
    result = run_trace(str(tmp_path / "object.png"), "--out", str(out), "--checkpoint", str(random_checkpoint),
                       "--steps", "1")  # fmt: skip
    assert result.returncode == 0 and out.exists(), result.stderr


class Payload:
    """Unpickling this would create the file `marker` (what an attack would do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


MALICIOUS = {  # how a model.pt can smuggle an object in: name → (what to save, legacy format?)
    "object at the top": (lambda m: Payload(m), False),
    "object as the state dict": (lambda m: {"model_state_dict": Payload(m)}, False),
    "object inside the EMA weights": (lambda m: {"ema_state_dict": {"w": Payload(m)}}, False),
    "object in a list": (lambda m: {"model_state_dict": {"w": [torch.zeros(1), Payload(m)]}}, False),
    "object beside real tensors": (lambda m: {"net.decoder_blocks.0.w": torch.zeros(2), "extra": Payload(m)}, False),
    "legacy (non-zip) file": (lambda m: {"model_state_dict": Payload(m)}, True),
    "plain pickle": (None, False),
}


@pytest.mark.parametrize("kind", sorted(MALICIOUS))
def test_pickled_objects_in_a_checkpoint_are_never_loaded(tmp_path, kind):
    """Seven ways to hide an object in a .pt are all refused by the weights-only reader, and nothing runs."""
    import pickle

    from core.model.checkpoint import CheckpointError

    marker, path = tmp_path / "pwned", tmp_path / "evil.pt"
    make, legacy = MALICIOUS[kind]
    if make is None:
        path.write_bytes(pickle.dumps(Payload(marker)))
    else:
        torch.save(make(marker), path, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(CheckpointError, match="weights-only|cannot be read"):
        load_model(path, "cpu")
    assert not marker.exists()


def official_layout_model():
    """A small model whose encoder uses DINOv2's head width (64), so its config can be read from shapes."""
    cfg = small_config()
    cfg.encoder.embed_dim, cfg.encoder.num_heads = 64, 1
    torch.manual_seed(1)
    model = WTDiT(cfg).eval()
    torch.nn.init.normal_(model.head.out.weight, std=0.05)
    return model


def test_official_checkpoint_traces_like_ours(tmp_path):
    """The same weights as an official model.pt (EMA preferred) and as our .safetensors trace identically."""
    model = official_layout_model()
    save_checkpoint(tmp_path / "ours.safetensors", model.state_dict(), model.cfg, PointNormalization())
    official = ours_to_official(model.state_dict())
    stale = {k: torch.zeros_like(v) for k, v in official.items()}
    torch.save(
        {"model_state_dict": stale, "ema_state_dict": {f"_orig_mod.{k}": v for k, v in official.items()}},
        tmp_path / "model.pt",
    )
    rgba = read_image(DATA / "object_rgba.png")
    results = []
    for name in ("ours.safetensors", "model.pt"):
        m, norm, card = load_model(tmp_path / name, "cpu")
        results.append(trace_image(m, norm, rgba, seed=3, cfg=SampleConfig(steps=2)))
    assert card.release == "custom" and card.mode == "object"
    np.testing.assert_array_equal(results[0].points, results[1].points)
    np.testing.assert_array_equal(results[0].valid, results[1].valid)


@pytest.mark.parametrize("shape", [(30, 90), (90, 30)])
def test_any_aspect_ratio_comes_back_at_its_own_size(random_checkpoint, shape):
    """Wide and tall images are framed into the square and returned at their own H×W, in both modes."""
    model, norm, _ = load_model(random_checkpoint, "cpu")
    rgba = np.full((*shape, 4), 255, np.uint8)
    rgba[..., :3] = np.random.default_rng(0).integers(0, 255, (*shape, 3))
    for mode in ("object", "scene"):
        lpm = trace_image(model, norm, rgba, mode, SampleConfig(steps=1), edge_filter_strength=0.0)
        assert lpm.points.shape[1:3] == shape
    assert lpm.valid[0].all()  # scene mode: the whole frame (the edge filter off)


def test_objects_sample_anchored_and_scenes_only_with_a_depth_net(random_checkpoint):
    """Object mode restarts the visible layer from the placed silhouette when the config anchors (the
    result differs from plain sampling with the same seed); scene mode ignores the setting for a model
    without a DepthNet (tests/test_scene_model.py covers one with)."""
    model, norm, _ = load_model(random_checkpoint, "cpu")
    rgba = np.asarray(Image.open(DATA / "object_rgba.png").convert("RGBA"))
    for mode, differs in (("object", True), ("scene", False)):
        plain, anchored = (
            trace_image(model, norm, rgba, mode, SampleConfig(steps=3, anchor=anchor), seed=1, edge_filter_strength=0)
            for anchor in (None, 0.0)
        )
        assert (not np.array_equal(plain.points, anchored.points)) == differs, mode


def test_object_framing_centres_the_foreground_at_two_thirds():
    """Object images are cropped to a square around the foreground, which spans 2/3 of it."""
    rgba = np.zeros((100, 200, 4), np.uint8)
    rgba[40:60, 120:150] = 255
    prepared = prepare_image(rgba, 90, "object")
    rows, cols = np.nonzero(prepared.foreground)
    assert cols.max() - cols.min() + 1 == pytest.approx(60, abs=2)
    assert abs((rows.min() + rows.max()) / 2 - 45) <= 1.5 and abs((cols.min() + cols.max()) / 2 - 45) <= 1.5


def test_a_mask_image_sets_the_object(random_checkpoint, tmp_path):
    """`--mask` takes the object from a mask made by any tool (white = object) instead of the image's own
    alpha: layer 0 lies exactly on the mask; a mask of another size is refused in one line, nothing written."""
    rgba = np.asarray(Image.open(DATA / "object_rgba.png").convert("RGBA"))
    H, W = rgba.shape[:2]
    mask = np.zeros((H, W), np.uint8)
    mask[H // 4 : 3 * H // 4, : W // 2] = 255  # a box over the left half, whatever the alpha says
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out = tmp_path / "masked.npz"
    args = ["--checkpoint", str(random_checkpoint), "--steps", "1", "--device", "cpu", "--edge-filter", "0"]
    result = run_trace(str(DATA / "object_rgba.png"), "--out", str(out), "--mask", str(tmp_path / "mask.png"), *args)
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(LayeredPointMap.load(out).valid[0], mask > 0)
    Image.fromarray(mask[:, :-1]).save(tmp_path / "narrow.png")
    bad = tmp_path / "bad.npz"
    result = run_trace(str(DATA / "object_rgba.png"), "--out", str(bad), "--mask", str(tmp_path / "narrow.png"), *args)
    assert result.returncode != 0 and "the mask is" in result.stderr and not bad.exists()
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
