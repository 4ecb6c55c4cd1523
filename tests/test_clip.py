"""Dynamic mode from the command line: clips read from folders and animated files, bad clips refused
with one sentence, and `trace --mode dynamic` writing the (T, L, H, W, 3) contract with a temporal model
(windows) and with a single-image model (every frame on its own)."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import DATA, ROOT, small_config
from PIL import Image

from core.clip import read_clip, scale_to, trace_clip, window_starts
from core.geometry.points import PointNormalization
from core.imageio import ImageError
from core.model.checkpoint import save_checkpoint
from core.model.loading import load_model
from core.model.wtdit import WTDiT
from core.sampling import SampleConfig


def frames_folder(folder, count: int, size=(48, 40), alpha: bool = True):
    """`count` PNG frames of a square moving right over a plain background (transparent when `alpha`)."""
    folder.mkdir()
    for k in range(count):
        rgba = np.zeros((size[1], size[0], 4), np.uint8)
        rgba[..., :3] = 200
        rgba[..., 3] = 0 if alpha else 255
        rgba[10:30, 8 + 2 * k : 28 + 2 * k] = (180, 60, 40, 255)
        Image.fromarray(rgba).save(folder / f"{k:04d}.png")
    return folder


def run_trace(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "core", "trace", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_a_folder_and_an_animated_file_read_as_clips(tmp_path):
    folder = frames_folder(tmp_path / "frames", 3)
    (folder / "notes.txt").write_text("not a frame")
    clip = read_clip(folder)
    assert clip.shape == (3, 40, 48, 4) and clip.dtype == np.uint8
    assert clip[2, 20, 30, 0] == 180 and clip[0, 20, 30, 3] == 0  # sorted by name: the square moved right
    frames = [Image.fromarray(f[..., :3]) for f in clip]
    frames[0].save(tmp_path / "clip.gif", save_all=True, append_images=frames[1:])
    assert read_clip(tmp_path / "clip.gif").shape == (3, 40, 48, 4)


def test_bad_clips_are_refused_with_one_sentence(tmp_path):
    (tmp_path / "empty").mkdir()
    single = frames_folder(tmp_path / "single", 1)
    sizes = frames_folder(tmp_path / "sizes", 3)
    Image.new("RGB", (40, 40)).save(sizes / "0001.png")
    broken = frames_folder(tmp_path / "broken", 3)
    shutil.copy(DATA / "truncated.png", broken / "0001.png")
    (tmp_path / "clip.mp4").write_bytes(b"\0" * 64)
    cases = [
        (tmp_path / "empty", "no frames"),
        (single, "one frame only"),
        (sizes, "0001.png is 40×40, the first frame 48×40"),
        (broken, "frame 2 of 3"),
        (tmp_path / "clip.mp4", "no video decoder"),
        (tmp_path / "missing", "not found"),
    ]
    for path, message in cases:
        with pytest.raises(ImageError, match=message):
            read_clip(path)


def test_windows_cover_every_frame_and_overlap():
    for frames in range(1, 30):
        starts = window_starts(frames, 8, 2)
        covered = set().union(*(range(s, min(s + 8, frames)) for s in starts))
        assert covered == set(range(frames)), frames
        assert all(b - a == 6 for a, b in zip(starts, starts[1:], strict=False))


def test_scale_to_matches_the_reference_where_both_are_valid():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(4, 5, 3)) + [0, 0, 3]
    valid = np.ones((4, 5), bool)
    assert scale_to(2 * q, valid, q, valid) == pytest.approx(0.5)
    assert scale_to(q, ~valid, q, valid) == 1.0


@pytest.fixture(scope="module")
def temporal_checkpoint(tmp_path_factory):
    torch.manual_seed(1)
    model = WTDiT(dataclasses.replace(small_config(), temporal=True))
    torch.nn.init.normal_(model.head.out.weight, std=0.05)
    path = tmp_path_factory.mktemp("temporal") / "temporal.safetensors"
    save_checkpoint(path, model.state_dict(), model.cfg, PointNormalization("log_median"), {"name": "random temporal"})
    return path


def test_a_temporal_model_traces_a_clip_in_windows(temporal_checkpoint, tmp_path):
    """Five frames in windows of three (one frame shared): every frame gets layered geometry at its own
    size, one camera for the clip, and the windows' seeds differ (no frame is a copy of another)."""
    model, normalization, card = load_model(temporal_checkpoint)
    assert card.mode == "dynamic" and card.sample_config().anchor is None
    frames = read_clip(frames_folder(tmp_path / "frames", 5, alpha=False))
    seen = []
    clip = trace_clip(
        model, normalization, frames, SampleConfig(steps=2), on_step=lambda f, s: seen.append((f, s.step)),
        edge_filter_strength=0, window=3, overlap=1,
    )  # fmt: skip
    assert seen == [(0, 1), (0, 2), (2, 1), (2, 2)]
    assert clip.points.shape == (5, 4, 40, 48, 3) and clip.valid.shape == (5, 4, 40, 48)
    assert clip.intrinsics.shape == (3, 3) and clip.image.shape == (5, 40, 48, 3)
    assert clip.valid[:, 0].all() and np.isfinite(clip.points).all()
    assert (clip.points[..., 2][clip.valid] > 0).all()
    assert not np.array_equal(clip.points[0], clip.points[4])


def test_trace_dynamic_writes_the_contract(temporal_checkpoint, random_checkpoint, tmp_path):
    """`trace FRAMES --mode dynamic`: points (T, L, H, W, 3), valid, one intrinsics, image (T, H, W, 3),
    with a temporal model and, saying so, with a single-image one; bad clips exit 2 writing nothing."""
    folder = frames_folder(tmp_path / "frames", 3)
    for checkpoint, note in ((temporal_checkpoint, False), (random_checkpoint, True)):
        out = tmp_path / f"{checkpoint.stem}.npz"
        result = run_trace(str(folder), "--out", str(out), "--mode", "dynamic", "--checkpoint", str(checkpoint),
                           "--steps", "2")  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        assert ("single-image model" in result.stdout) == note
        with np.load(out) as f:
            assert f["points"].shape == (3, 4, 40, 48, 3) and f["points"].dtype == np.float32
            assert f["valid"].shape == (3, 4, 40, 48) and f["valid"].dtype == bool
            assert f["intrinsics"].shape == (3, 3) and f["image"].shape == (3, 40, 48, 3)
            assert f["valid"][:, 0].any(axis=(1, 2)).all()
    single = frames_folder(tmp_path / "single", 1)
    out = tmp_path / "bad.npz"
    result = run_trace(str(single), "--out", str(out), "--mode", "dynamic", "--checkpoint", str(temporal_checkpoint))
    assert result.returncode == 2 and "one frame only" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()
