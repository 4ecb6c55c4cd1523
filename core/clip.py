"""Dynamic mode: a clip of frames in, layered geometry for every frame out, seen by one camera.

A clip is a folder of images (sorted by name) or an animated image file (GIF, APNG, WebP, TIFF);
video containers are decoded with PyAV when it is installed. A temporal model (the released r76
layout, `temporal=True`; our shipped dynamic model) traces the clip in overlapping windows; each
window is brought to the scale of the frames already traced by the least-squares scale on the
overlapping frames' visible surface. A single-image model traces every frame on its own (the
per-frame floor of DESIGN.md), each frame scaled to agree with the previous one. Axes: T frames, L layers, H×W pixels.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .atomic import write_atomic
from .geometry.edges import DEFAULT_STRENGTH
from .geometry.points import PointNormalization, pixel_rays
from .imageio import BACKGROUND, ImageError, foreground_mask, prepare_image, read_image, square_around_foreground
from .inference import intrinsics_in_input, predict, to_input, trace_image
from .layered import LayeredPointMap, write_npz
from .model.wtdit import WTDiT
from .sampling import DEFAULT_SAMPLING, SampleConfig, SamplerStep

FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
WINDOW = 4  # frames a temporal model sees at once (our dynamic model is trained on clips of 4)
OVERLAP = 1  # frames two neighbouring windows share (their scale is matched there)


@dataclass
class LayeredClip:
    """points (T, L, H, W, 3) float32, valid (T, L, H, W) bool, intrinsics (3, 3) float32 (one camera),
    image (T, H, W, 3) uint8: the `trace --mode dynamic` file."""

    points: np.ndarray
    valid: np.ndarray
    intrinsics: np.ndarray
    image: np.ndarray

    def frame(self, t: int) -> LayeredPointMap:
        """Frame t as a LayeredPointMap (views of the clip's arrays)."""
        return LayeredPointMap(self.points[t], self.valid[t], self.intrinsics, self.image[t])

    def save(self, path: str | os.PathLike) -> None:
        arrays = {"points": self.points, "valid": self.valid, "intrinsics": self.intrinsics, "image": self.image}
        write_atomic(path, lambda f: write_npz(f, arrays))


def read_clip(path: str | os.PathLike) -> np.ndarray:
    """The frames of a folder, an animated image or a video as (T, H, W, 4) uint8 RGBA.

    ImageError with one sentence naming the file for: no frames, a single frame, an unreadable frame,
    frames of different sizes, a video no installed decoder reads.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
        if not files:
            raise ImageError(f"{path}: no frames (PNG or JPEG files) in this folder")
        frames = []
        for k, file in enumerate(files):
            try:
                frames.append(read_image(file))
            except ImageError as e:
                raise ImageError(f"frame {k + 1} of {len(files)}: {e}") from None
        names = [p.name for p in files]
    elif not path.is_file():
        raise ImageError(f"clip not found: {path}")
    elif path.suffix.lower() in VIDEO_SUFFIXES:
        frames, names = _decode_video(path), []
    else:
        frames, names = _animated_frames(path), []
    if len(frames) < 2:
        raise ImageError(
            f"{path}: one frame only; dynamic mode needs a clip of at least 2 frames (trace a single image "
            "in object or scene mode)"
        )
    for k, frame in enumerate(frames[1:], start=1):
        if frame.shape != frames[0].shape:
            name = names[k] if names else f"frame {k + 1}"
            raise ImageError(
                f"{path}: {name} is {frame.shape[1]}×{frame.shape[0]}, the first frame "
                f"{frames[0].shape[1]}×{frames[0].shape[0]}: all frames of a clip must have one size"
            )
    return np.stack(frames)


def _animated_frames(path: Path) -> list[np.ndarray]:
    from PIL import Image, ImageSequence, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return [np.asarray(frame.convert("RGBA"), dtype=np.uint8).copy() for frame in ImageSequence.Iterator(im)]
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ImageError(f"{path}: not a readable clip ({e})") from None


def _decode_video(path: Path) -> list[np.ndarray]:
    try:
        import av  # PyAV: optional, not bundled
    except ImportError:
        raise ImageError(
            f"{path}: no video decoder is installed (PyAV); export the clip as a folder of PNG frames"
        ) from None
    try:
        with av.open(str(path)) as container:
            return [frame.to_ndarray(format="rgba") for frame in container.decode(video=0)]
    except (av.FFmpegError, ValueError) as e:
        raise ImageError(f"{path}: cannot decode this video ({e})") from None


def clip_mode(frames: np.ndarray) -> str:
    """How a clip (T, H, W, 4) is traced: "object" when its frames have transparency, else "scene"."""
    return "object" if (frames[..., 3] < 255).any() else "scene"


def scale_to(points: np.ndarray, valid: np.ndarray, reference: np.ndarray, reference_valid: np.ndarray) -> float:
    """Least-squares scale s minimising Σ‖s·p − q‖² over pixels valid in both (1 when none are).

    points, reference: (..., 3) camera-space points of the same pixels; valid, reference_valid: (...).
    """
    both = valid & reference_valid
    p, q = points[both].astype(np.float64), reference[both].astype(np.float64)
    denominator = float((p * p).sum())
    return float((p * q).sum() / denominator) if denominator > 0 else 1.0


def window_starts(frames: int, window: int = WINDOW, overlap: int = OVERLAP) -> list[int]:
    """First frames of the windows that cover `frames` frames, neighbours sharing `overlap` frames."""
    return list(range(0, max(frames - overlap, 1), window - overlap))


def trace_clip(
    model: WTDiT,
    normalization: PointNormalization,
    frames: np.ndarray,
    cfg: SampleConfig = DEFAULT_SAMPLING,
    seed: int = 0,
    on_step: Callable[[int, SamplerStep], None] | None = None,
    framing: str | None = None,
    edge_filter_strength: float = DEFAULT_STRENGTH,
    window: int = WINDOW,
    overlap: int = OVERLAP,
) -> LayeredClip:
    """Trace frames (T, H, W, 4) uint8 into one LayeredClip at their own H×W.

    A temporal model runs windows of `window` frames, `overlap` of them shared with the previous
    window (window k uses seed + k); any other model traces each frame alone, every frame with `seed`
    (the same noise: a still clip stays still).
    Frames with transparency are traced in object mode (a temporal model sees every frame in one
    square around the clip's foreground, its visible layers anchored as in `trace_image`), others on
    the whole frame. `on_step(frame, step)`
    follows the sampler (frame: the first frame of the window) and may raise TraceCancelled.
    """
    if not 0 <= overlap < window:
        raise ValueError(f"overlap must be in [0, window), got {overlap} for a window of {window}")
    if not model.cfg.temporal:
        return _per_frame(model, normalization, frames, cfg, seed, on_step, framing, edge_filter_strength)
    T, H, W = frames.shape[:3]
    L, S = model.cfg.num_layers, model.cfg.image_size
    mode = clip_mode(frames)
    if mode == "object":  # one square around the foreground of every frame: one camera for the clip
        masks = np.stack([foreground_mask(f, mode) for f in frames])
        if not masks.any(axis=(1, 2)).all():
            empty = int(np.argmin(masks.any(axis=(1, 2))))
            raise ImageError(f"frame {empty + 1} of {T} has no foreground (it is fully transparent)")
        square = square_around_foreground(masks.any(axis=0))
        prepared = [prepare_image(f, S, mode, BACKGROUND, "crop", square) for f in frames]
    else:
        masks = np.ones((T, H, W), bool)
        prepared = [prepare_image(f, S, mode, BACKGROUND, framing or "letterbox") for f in frames]
        if model.depth is None:
            cfg = replace(cfg, anchor=None)  # nothing to inflate in a full frame (as `trace_image`)
    box = prepared[0].box
    points = np.zeros((T, L, H, W, 3), np.float32)
    valid = np.zeros((T, L, H, W), bool)
    model_points: dict[int, np.ndarray] = {}  # frame → its model-resolution points (L, S, S, 3), as placed
    model_valid: dict[int, np.ndarray] = {}
    intrinsics = None
    for k, start in enumerate(window_starts(T, window, overlap)):
        idx = list(range(start, min(start + window, T)))
        rgb = torch.from_numpy(np.stack([prepared[i].image for i in idx])).permute(0, 3, 1, 2).float().div(255)
        foreground = torch.from_numpy(np.stack([prepared[i].foreground for i in idx]))
        step_hook = None if on_step is None else (lambda step, first=start: on_step(first, step))
        pred = predict(model, normalization, rgb[None], foreground[None], cfg, seed + k, step_hook)
        p = pred.points[0].cpu().reshape(len(idx), L, S, S, 3).numpy()
        v = pred.valid[0].cpu().reshape(len(idx), L, S, S).numpy()
        shared = [i for i in idx if i in model_points]
        if shared:
            j = [idx.index(i) for i in shared]
            ref = np.stack([model_points[i][0] for i in shared])
            ref_valid = np.stack([model_valid[i][0] for i in shared])
            p = p * scale_to(p[j, 0], v[j, 0], ref, ref_valid)
        if intrinsics is None:
            solved = [intrinsics_in_input(p[t, 0], v[t, 0], box) for t in range(len(idx))]
            intrinsics = np.median(np.stack(solved), axis=0).astype(np.float32)
        for t, i in enumerate(idx):
            if i in model_points:
                continue
            model_points[i], model_valid[i] = p[t], v[t]
            restored, restored_valid = to_input(
                torch.from_numpy(p[t : t + 1]), torch.from_numpy(v[t : t + 1]), box, intrinsics,
                masks[i], edge_filter_strength,
            )  # fmt: skip
            points[i], valid[i] = restored[0].numpy(), restored_valid[0].numpy()
    assert intrinsics is not None
    return LayeredClip(points, valid, intrinsics, np.ascontiguousarray(frames[..., :3]))


def _per_frame(
    model: WTDiT,
    normalization: PointNormalization,
    frames: np.ndarray,
    cfg: SampleConfig,
    seed: int,
    on_step: Callable[[int, SamplerStep], None] | None,
    framing: str | None,
    edge_filter_strength: float,
) -> LayeredClip:
    """Every frame traced on its own by a single-image model from the same seed, each scaled to agree
    with the one before, then put on the rays of one camera (the median of the frames' own)."""
    mode = clip_mode(frames)
    traced: list[LayeredPointMap] = []
    for i, frame in enumerate(frames):
        hook = None if on_step is None else (lambda step, i=i: on_step(i, step))
        lpm = trace_image(
            model, normalization, frame, mode, cfg, seed, on_step=hook,
            framing=framing if mode == "scene" else None, edge_filter_strength=edge_filter_strength,
        )  # fmt: skip
        if traced:
            previous = traced[-1]
            lpm.points *= scale_to(lpm.points[0], lpm.valid[0], previous.points[0], previous.valid[0])
        traced.append(lpm)
    intrinsics = np.median(np.stack([t.intrinsics for t in traced]), axis=0).astype(np.float32)
    points = np.stack([t.points for t in traced])  # (T, L, H, W, 3)
    rays = pixel_rays(torch.from_numpy(intrinsics), *points.shape[2:4]).numpy()  # (H, W, 3)
    points = points[..., 2:] * rays  # every frame on the clip's one camera: each pixel keeps its depth
    return LayeredClip(points, np.stack([t.valid for t in traced]), intrinsics, np.ascontiguousarray(frames[..., :3]))
