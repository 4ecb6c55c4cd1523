"""Reading user images and preparing them for the model: foreground, background, letterbox, resize."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

BACKGROUND = (128, 128, 128)  # grey behind the foreground (the released object model's), in tracing and training alike
MIN_SIDE = 16  # pixels
MAX_PIXELS = 4096 * 4096  # the output holds L points per pixel; larger images should be downscaled first
BLANK_STD = 2.0  # a frame whose colours vary less than this (0–255 units) shows nothing to trace


class ImageError(ValueError):
    """An input image cannot be traced (reason in the message)."""


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Any PNG/JPEG (8 or 16 bit, grey, grey+alpha, palette, RGB, RGBA, CMYK) → (H, W, 4) uint8 RGBA.

    EXIF orientation is applied. Raises ImageError for missing, unreadable, too small or too large files.
    """
    if not os.path.isfile(path):
        raise ImageError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            width, height = im.size
            if width * height > MAX_PIXELS:
                raise ImageError(
                    f"{path}: {width}×{height} is {width * height / 1e6:.0f} MP; the limit is "
                    f"{MAX_PIXELS / 1e6:.0f} MP (the output holds several points per pixel) — downscale it first"
                )
            upright = ImageOps.exif_transpose(im)
            upright.load()
            rgba = _to_rgba(upright)
    except ImageError:
        raise
    except Image.DecompressionBombError as e:  # more than twice Pillow's own pixel limit, refused unread
        raise ImageError(f"{path}: too large to decode safely ({e}) — downscale it first") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{path}: not a readable image ({e})") from None
    if min(rgba.shape[:2]) < MIN_SIDE:
        raise ImageError(
            f"{path}: {rgba.shape[1]}×{rgba.shape[0]} is too small; at least {MIN_SIDE}×{MIN_SIDE} pixels are needed"
        )
    return rgba


def _to_rgba(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16/32-bit grey: scale to 8 bit
        a = np.nan_to_num(np.asarray(im, dtype=np.float64))
        if im.mode == "F" and a.max() <= 1.0:
            top = 1.0  # float images hold [0, 1]
        else:
            top = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        grey = np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.dstack([grey, grey, grey, np.full_like(grey, 255)])
    return np.asarray(im.convert("RGBA"), dtype=np.uint8).copy()


def foreground_mask(rgba: np.ndarray, mode: str = "object", tolerance: int = 12) -> np.ndarray:
    """(H, W) bool foreground.

    "object": alpha > 127 when the image has transparency; otherwise a plain background is keyed
    out when at least 95% of the 1-pixel border lies within `tolerance` of the border's median
    colour; otherwise everything. "scene": alpha > 127 (everything for opaque images).
    """
    alpha = rgba[..., 3]
    if alpha.min() < 255 or mode == "scene":
        return alpha > 127
    rgb = rgba[..., :3].astype(np.int16)
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    key = np.median(border, axis=0)
    if (np.abs(border - key).max(axis=1) <= tolerance).mean() < 0.95:
        return np.ones(alpha.shape, dtype=bool)
    return np.abs(rgb - key).max(axis=-1) > tolerance


@dataclass(frozen=True)
class ImageBox:
    """Where the input sits in the model's square, per axis: model = input·scale + offset (continuous pixels)."""

    scale_x: float
    scale_y: float
    offset_x: float
    offset_y: float


@dataclass
class PreparedImage:
    image: np.ndarray  # (S, S, 3) uint8 at the model's resolution, background painted
    foreground: np.ndarray  # (S, S) bool
    box: ImageBox


FRAMINGS = ("crop", "letterbox", "stretch")


def check_not_blank(rgba: np.ndarray) -> None:
    """Raise ImageError when a whole frame (H, W, 4) is one colour (a blank frame, an all-sky shot):
    scene mode would turn it into an invented surface."""
    step = max(1, max(rgba.shape[:2]) // 512)  # a subsample bounds the cost on large photos
    if rgba[::step, ::step, :3].reshape(-1, 3).std(axis=0).max() < BLANK_STD:
        raise ImageError(
            "the frame is one colour (blank, or all sky): scene mode has nothing to trace in it; "
            "trace an image with visible surfaces"
        )


def with_mask(rgba: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """`rgba` (H, W, 4) uint8 with its alpha replaced by a mask image's foreground (a copy).

    mask: (H, W, 4) uint8, a mask from any tool: its alpha where it has transparency, else its
    brightness (mean of RGB) > 127. Raises ValueError when the sizes differ or the mask is empty.
    """
    if mask.shape[:2] != rgba.shape[:2]:
        raise ValueError(
            f"the mask is {mask.shape[1]}×{mask.shape[0]} pixels but the image is {rgba.shape[1]}×{rgba.shape[0]}"
        )
    inside = mask[..., 3] > 127 if mask[..., 3].min() < 255 else mask[..., :3].mean(axis=-1) > 127
    if not inside.any():
        raise ValueError("the mask is empty: nothing is marked as foreground (white or opaque)")
    out = rgba.copy()
    out[..., 3] = np.where(inside, 255, 0).astype(np.uint8)
    return out


def downsized(rgba: np.ndarray, max_side: int) -> np.ndarray:
    """`rgba` (H, W, 4) uint8 scaled down (box filter, aspect kept) so its longer side is `max_side`, or
    itself when it is no longer than that."""
    H, W = rgba.shape[:2]
    if max(H, W) <= max_side:
        return rgba
    scale = max_side / max(H, W)
    size = (max(1, round(W * scale)), max(1, round(H * scale)))
    return np.asarray(Image.fromarray(rgba, "RGBA").resize(size, Image.Resampling.BOX), dtype=np.uint8)


def square_around_foreground(foreground: np.ndarray, fill: float = 2 / 3) -> tuple[int, int, int]:
    """(top, left, side) of the square centred on the foreground's bounding box, which spans `fill` of it.

    The released object model's rule: side = ceil(longest box side / fill), top-left rounded.
    """
    rows, cols = np.nonzero(foreground)
    top, bottom, left, right = rows.min(), rows.max(), cols.min(), cols.max()
    side = int(np.ceil(max(bottom - top + 1, right - left + 1) / fill))
    cy, cx = (top + bottom) / 2, (left + right) / 2
    return round(cy - side / 2), round(cx - side / 2), side


def prepare_image(
    rgba: np.ndarray,
    size: int,
    mode: str = "object",
    background: tuple[int, int, int] = BACKGROUND,
    framing: str = "crop",
    square: tuple[int, int, int] | None = None,
) -> PreparedImage:
    """Composite the foreground on `background` and frame it in a size×size square (RGB bilinear,
    mask nearest). Framing: "crop" a square centred on the foreground (objects, as the released
    object model; or the given `square` (top, left, side), e.g. one for all frames of a clip),
    "letterbox" the whole image (padding is background), or "stretch" it (aspect not kept, as the
    released scene model). Raises ImageError when nothing is foreground."""
    if mode not in ("object", "scene"):
        raise ValueError(f"mode must be 'object' or 'scene', got {mode!r}")
    if framing not in FRAMINGS:
        raise ValueError(f"framing must be one of {FRAMINGS}, got {framing!r}")
    fg = foreground_mask(rgba, mode)
    if not fg.any():
        raise ImageError(
            "the image has no foreground (fully transparent, or all background); "
            "give an object with alpha, or use scene mode"
        )
    a = (rgba[..., 3:4].astype(np.float32) / 255.0) if rgba[..., 3].min() < 255 else fg[..., None].astype(np.float32)
    rgb = np.clip(
        rgba[..., :3].astype(np.float32) * a + np.asarray(background, np.float32) * (1 - a) + 0.5, 0, 255
    ).astype(np.uint8)
    H, W = fg.shape
    if framing == "stretch":
        top, left, height, width = 0, 0, H, W
    elif framing == "letterbox":
        side = max(H, W)
        top, left, height, width = (H - side) // 2, (W - side) // 2, side, side
    else:
        top, left, side = square or square_around_foreground(fg)
        height = width = side
    canvas = np.empty((height, width, 3), dtype=np.uint8)
    canvas[:] = background
    mask = np.zeros((height, width), dtype=bool)
    src = np.s_[max(top, 0) : min(top + height, H), max(left, 0) : min(left + width, W)]
    dst = np.s_[
        max(-top, 0) : max(-top, 0) + (src[0].stop - src[0].start),
        max(-left, 0) : max(-left, 0) + (src[1].stop - src[1].start),
    ]
    canvas[dst], mask[dst] = rgb[src], fg[src]
    image = np.array(Image.fromarray(canvas).resize((size, size), Image.Resampling.BILINEAR))
    mask = np.array(Image.fromarray(mask).resize((size, size), Image.Resampling.NEAREST))
    if not mask.any():
        raise ImageError("the foreground is too small to survive resizing to the model's resolution")
    sx, sy = size / width, size / height
    return PreparedImage(image, mask, ImageBox(sx, sy, -left * sx, -top * sy))
