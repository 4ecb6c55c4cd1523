"""What to trace, read from Blender on the main thread: the image (a file, or a Blender image's
pixels), the model and the panel's settings, as a plain `TraceRequest` for the worker."""

from __future__ import annotations

import os
from pathlib import Path

import bpy
import numpy as np

from ..preferences import preferences
from .job import TraceRequest
from .pytorch import prepare_torch

NON_COLOR = ("Non-Color", "Raw", "Generic Data")  # colour spaces whose pixels are data, shown as they are


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """The sRGB transfer function on linear values (clipped to [0, 1])."""
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)


def image_pixels(image: bpy.types.Image) -> np.ndarray:
    """(H, W, 4) uint8 of a Blender image as Blender displays it, top row first (main thread).

    Float images (EXR, HDR, 32-bit TIFF) hold linear values: they go through the sRGB transfer
    function; byte images are already display-encoded.
    """
    W, H = image.size
    if W == 0 or H == 0:
        raise ValueError(f"image '{image.name}' has no pixels (is the file missing?)")
    px = np.empty(W * H * image.channels, np.float32)
    image.pixels.foreach_get(px)
    px = px.reshape(H, W, image.channels)[::-1]
    if image.channels == 1:
        px = np.repeat(px, 3, axis=-1)
    if px.shape[-1] == 2:  # grey + alpha
        px = np.concatenate([np.repeat(px[..., :1], 3, axis=-1), px[..., 1:]], axis=-1)
    if px.shape[-1] == 3:
        px = np.concatenate([px, np.ones((H, W, 1), np.float32)], axis=-1)
    if image.is_float and image.colorspace_settings.name not in NON_COLOR:
        px[..., :3] = linear_to_srgb(px[..., :3])
    return (np.clip(px, 0, 1) * 255 + 0.5).astype(np.uint8)


def pillow_identifies(path: str) -> bool:
    """Does Pillow know this file's format? (Reading it may still fail: the worker then says why.)"""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path):
            return True
    except UnidentifiedImageError:
        return False
    except Exception:  # truncated, too large, ...: read_image in the worker gives the reason
        return True


def decoded_by_blender(path: str) -> np.ndarray | None:
    """Pixels of an image file that Pillow cannot identify but Blender can read (EXR, HDR, ...),
    or None. A Blender image loaded only for this is removed again."""
    if pillow_identifies(path):
        return None
    known = {bpy.path.abspath(i.filepath) for i in bpy.data.images if i.filepath}
    try:
        image = bpy.data.images.load(path, check_existing=True)
    except RuntimeError:
        return None  # Blender cannot read it either: the worker reports Pillow's reason
    try:
        return image_pixels(image) if image.size[0] and image.size[1] else None
    finally:
        if path not in known and image.users == 0:
            bpy.data.images.remove(image)


def editor_image(context) -> bpy.types.Image | None:
    """The image shown in an Image Editor of the current screen, if any."""
    screen = getattr(context, "screen", None)
    for area in getattr(screen, "areas", []):
        if area.type == "IMAGE_EDITOR" and area.spaces.active.image is not None:
            return area.spaces.active.image
    return None


def selected_checkpoint(context) -> str:
    """The checkpoint the preferences choose (when empty: the one shipped for the panel's mode)."""
    prefs = preferences(context)
    if prefs.checkpoint:
        return bpy.path.abspath(prefs.checkpoint)
    from ..core.assets import default_checkpoint

    return str(default_checkpoint(context.scene.world_tracing.mode))


def make_request(
    context, seed: int, filepath: str = "", image: bpy.types.Image | None = None
) -> tuple[TraceRequest, str, bpy.types.Image | None]:
    """(request, name stem for the result, Blender image to show on it) from the panel and preferences.

    The input is `filepath`, else `image`, else the panel's image, else the one in an Image Editor.
    A file Pillow cannot read but Blender can is decoded by Blender here (main thread).
    """
    settings, prefs = context.scene.world_tracing, preferences(context)
    if settings.mode == "dynamic":
        raise ValueError("dynamic mode traces clips: use Trace Clip (an image sequence, a movie or a folder of frames)")
    prepare_torch(context)
    request = TraceRequest(
        checkpoint=selected_checkpoint(context),
        device=prefs.device,
        mode=settings.mode,
        steps=settings.steps,
        seed=seed,
        samples=settings.samples,
        edge_filter=settings.edge_filter,
        far_limit=settings.far_limit if settings.mode == "scene" else 0.0,
        geometry_size=settings.geometry_size,
    )
    if settings.mode == "object" and settings.mask is not None:
        request.mask = image_pixels(settings.mask)
    if filepath:
        request.image_path = bpy.path.abspath(filepath)
        request.label = stem = Path(request.image_path).stem
        if os.path.isfile(request.image_path):
            request.pixels = decoded_by_blender(request.image_path)
        return request, stem, None
    image = image or settings.image or editor_image(context)
    if image is None:
        raise ValueError("no image: open one in the World Tracing panel, or pass filepath=")
    path = bpy.path.abspath(image.filepath) if image.filepath else ""
    if path and os.path.isfile(path) and not image.packed_file and not image.is_dirty and pillow_identifies(path):
        request.image_path = path
    else:
        request.pixels = image_pixels(image)
    request.label = stem = Path(image.name).stem
    return request, stem, image


def make_clip_request(context, seed: int, filepath: str = "") -> tuple[TraceRequest, str, bpy.types.Image | None]:
    """(request, name stem for the result, Blender image to show behind the camera) for a clip: `filepath`
    (a folder of frames, an animated image or a video), else the panel's image when it is an image
    sequence (its folder is read) or a movie."""
    settings, prefs = context.scene.world_tracing, preferences(context)
    background = None
    if filepath:
        path = bpy.path.abspath(filepath)
    else:
        image = settings.image or editor_image(context)
        if image is None or image.source not in ("SEQUENCE", "MOVIE"):
            raise ValueError(
                "no clip: open an image sequence or a movie as the image in dynamic mode, or pass filepath= "
                "(a folder of frames)"
            )
        path = bpy.path.abspath(image.filepath)
        if image.source == "SEQUENCE":
            path = os.path.dirname(path)
        background = image
    prepare_torch(context)
    stem = Path(path.rstrip("/\\")).stem or "clip"
    request = TraceRequest(
        checkpoint=selected_checkpoint(context),
        device=prefs.device,
        mode="dynamic",
        steps=settings.steps,
        seed=seed,
        samples=1,
        edge_filter=settings.edge_filter,
        far_limit=0.0,
        geometry_size=settings.geometry_size,
        label=stem,
        clip_path=path,
    )
    return request, stem, background
