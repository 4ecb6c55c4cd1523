"""From images to layered point maps with a loaded WT-DiT (shared by `trace`, evaluation and Blender).

`predict` works at the model's square resolution on batches; `trace_image` wraps it for one
user image of any size: foreground, letterbox, sampling, then geometry back at the input's H×W.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from .geometry.camera import make_intrinsics, points_to_intrinsics
from .geometry.edges import DEFAULT_STRENGTH, edge_filter
from .geometry.far_limit import far_limit
from .geometry.placement import placed_depth
from .geometry.points import PointNormalization, collapsed_layers_to_valid, pixel_rays
from .geometry.silhouette import placed_inflation
from .imageio import BACKGROUND, ImageBox, check_not_blank, foreground_mask, prepare_image
from .layered import LayeredPointMap
from .model.wtdit import WTDiT
from .precision import bf16_autocast
from .sampling import DEFAULT_SAMPLING, SampleConfig, SamplerStep, initial_noise, sample_steps

RESTORE_ROWS = 256  # input rows restored at a time (bounds the temporaries of large inputs)
COLLAPSE_GAP = 0.01  # a layer counts when it lies this fraction of its depth behind the previous one


class TraceCancelled(Exception):
    """Raised from a progress callback to stop sampling between two steps."""


def pick_device(name: str = "auto") -> torch.device:
    """CUDA, then MPS, then CPU for "auto"; otherwise the named device (error if unavailable)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}: choose auto, cuda, mps or cpu") from None
    if device.type not in ("cuda", "mps", "cpu"):
        raise ValueError(f"device {name!r} is not supported: choose auto, cuda, mps or cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but this torch build sees no CUDA GPU")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("--device mps was asked for, but MPS is not available")
    return device


def model_callable(model: WTDiT, foreground: torch.Tensor | None = None) -> Callable:
    """The model as the sampler calls it: bf16 autocast where the device runs bf16 natively
    (`core/precision.py`), float32 elsewhere, no gradients;
    `foreground` [B, H, W] goes to the model (our configs' silhouette prior and refinement use it).
    The image tokens are computed on the first call and reused while the image stays the same."""
    device = next(model.parameters()).device
    cache: dict[str, torch.Tensor] = {}

    def run(x: torch.Tensor, t: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), bf16_autocast(device):
            if cache.get("image") is not image:
                cache["image"], cache["tokens"] = image, model.image_tokens(image)
            return model(x, t, image, foreground, cache["tokens"]).float()

    return run


@dataclass
class Prediction:
    """Camera-space points [B, L, H, W, 3] (zero where invalid) and validity [B, L, H, W]."""

    points: torch.Tensor
    valid: torch.Tensor


def predict(
    model: WTDiT,
    normalization: PointNormalization,
    image: torch.Tensor,
    foreground: torch.Tensor,
    cfg: SampleConfig = DEFAULT_SAMPLING,
    seed: int = 0,
    on_step: Callable[[SamplerStep], None] | None = None,
) -> Prediction:
    """Sample layered geometry for square images (or clips) at the model's resolution.

    image [B, 3, H, W] in [0, 1] (background already painted), foreground [B, H, W] bool; or a clip
    for a temporal model: image [B, T, 3, H, W], foreground [B, T, H, W]. Returns [B, T·L, ...]
    (frame-major). Sample k draws its noise from a generator seeded with seed + k on the model's
    device, so it does not depend on the batch it is in. `on_step` is called after every sampler step
    and may raise TraceCancelled. With cfg.anchor set, the visible layer of every image (or frame) restarts
    from the depth of the model's DepthNet (scene models) or the inflated foreground (shaped by its
    SurfaceNet, if any), placed like the model's first guess (`core/sampling.py`).
    """
    device = next(model.parameters()).device
    clip = image.dim() == 5
    frames = foreground.to(device) if clip else foreground.to(device)[:, None]  # [B, T, H, W]
    B, T, H, W = frames.shape
    L = model.cfg.num_layers
    generator = [torch.Generator(device).manual_seed(seed + k) for k in range(B)]
    image = image.to(device)
    noise = initial_noise(B, T, L, H, W, cfg, generator, device)
    valid_in = frames[:, :, None].expand(B, T, L, H, W).reshape(B, T * L, H, W)
    unit = torch.ones(B, device=device)

    def anchor(x0: torch.Tensor) -> torch.Tensor:
        """The visible layers' restart [B, T, H, W, 3], placed like the first guess x̂0: the model's
        DepthNet's depth (scene models), else the inflated mask (bent by its SurfaceNet, if any)."""
        reference = normalization.denormalize(x0[:, ::L], unit).flatten(0, 1)  # [B·T, H, W, 3]
        masks, images = frames.flatten(0, 1), (image if clip else image[:, None]).flatten(0, 1).float()
        with torch.inference_mode():
            if model.depth is not None:
                front = placed_depth(masks, reference, model.depth(images, masks))
            else:
                profile = None if model.surface is None else model.surface(images, masks)
                front = placed_inflation(masks, reference, profile)
        return normalization.normalize(front.unflatten(0, (B, T)), unit)

    x = noise
    steps = sample_steps(
        model_callable(model, None if clip else frames[:, 0]),
        image,
        noise,
        cfg,
        valid=valid_in,
        generator=generator,
        anchor=anchor,
        frames=T,
    )
    for step in steps:
        x = step.x
        if on_step is not None:
            on_step(step)
    points = normalization.denormalize(x.float()).reshape(B * T, L, H, W, 3)
    valid = collapsed_layers_to_valid(points, frames.reshape(B * T, H, W), COLLAPSE_GAP)
    return Prediction((points * valid[..., None]).reshape(B, T * L, H, W, 3), valid.reshape(B, T * L, H, W))


def trace_image(
    model: WTDiT,
    normalization: PointNormalization,
    rgba: np.ndarray,
    mode: str = "object",
    cfg: SampleConfig = DEFAULT_SAMPLING,
    seed: int = 0,
    samples: int = 1,
    on_step: Callable[[SamplerStep], None] | None = None,
    framing: str | None = None,
    edge_filter_strength: float = DEFAULT_STRENGTH,
    far_limit_factor: float = 0.0,
) -> LayeredPointMap:
    """Trace one RGBA image (H, W, 4) uint8 of any size into a layered point map at H×W.

    mode "object": alpha (or a keyed plain background) is the foreground, composited on grey and
    framed by a square around it; "scene": the whole frame, letterboxed (or as `framing` says).
    With samples > 1 every sample is kept in `extras["samples_points"]` (K, L, H, W, 3) and
    `extras["samples_valid"]`; sample 0 (seed) is the main result, sample k used seed + k.
    Flying points go (`core.geometry.edges`, at `edge_filter_strength`; 0: off): judged at the
    model's resolution, where the prediction has its detail, and dropped with every input pixel they
    cover (the cost does not grow with the input's size); so do points beyond `far_limit_factor` × the
    median visible depth (`core.geometry.far_limit`; 0: off). Scene mode anchors only a model with a
    DepthNet (a frame has no silhouette to inflate) and refuses a frame of one colour (ImageError).
    """
    if mode != "object":
        check_not_blank(rgba)
        if model.depth is None:
            cfg = replace(cfg, anchor=None)
    size = model.cfg.image_size
    framing = framing or ("crop" if mode == "object" else "letterbox")
    prepared = prepare_image(rgba, size, mode, BACKGROUND, framing)
    image = torch.from_numpy(prepared.image).permute(2, 0, 1)[None].float().div(255).expand(samples, -1, -1, -1)
    foreground = torch.from_numpy(prepared.foreground)[None].expand(samples, -1, -1)
    pred = predict(model, normalization, image, foreground, cfg, seed, on_step)
    model_points, model_valid = pred.points.cpu(), pred.valid.cpu()
    intrinsics = intrinsics_in_input(model_points[0, 0].numpy(), model_valid[0, 0].numpy(), prepared.box)
    points, valid = to_input(
        model_points, model_valid, prepared.box, intrinsics, foreground_mask(rgba, mode), edge_filter_strength,
        far_limit_factor,
    )  # fmt: skip
    extras = {}
    if samples > 1:
        extras = {"samples_points": points.numpy(), "samples_valid": valid.numpy()}
    return LayeredPointMap(points[0].numpy(), valid[0].numpy(), intrinsics, np.ascontiguousarray(rgba[..., :3]), extras)


def to_input(
    points: torch.Tensor,
    valid: torch.Tensor,
    box: ImageBox,
    intrinsics: np.ndarray,
    foreground: np.ndarray,
    edge_filter_strength: float = DEFAULT_STRENGTH,
    far_limit_factor: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Model-resolution layers [K, L, S, S, 3] → input resolution [K, L, H, W, 3] on the rays of
    `intrinsics`, after the edge filter and the far limit (judged at the model's resolution)."""
    filtered = edge_filter(points.numpy(), valid.numpy(), edge_filter_strength)
    kept = torch.from_numpy(far_limit(points.numpy(), filtered, far_limit_factor))
    return restore_layers(points, valid, box, intrinsics, foreground, kept)


def intrinsics_in_input(points: np.ndarray, valid: np.ndarray, box: ImageBox) -> np.ndarray:
    """Solve intrinsics on the model's layer 0 (H', W', 3) and express them in input pixels.

    When layer 0 gives no usable camera (too few points, or a non-positive focal length), falls back
    to the released models' default: fx = fy = 500·S/512 on the model's S×S square, centred.
    """
    try:
        k = points_to_intrinsics(points, valid).astype(np.float64)
    except ValueError:
        k = np.zeros((3, 3))
    if not (np.isfinite(k).all() and k[0, 0] > 0 and k[1, 1] > 0):
        S = valid.shape[0]
        warnings.warn("layer 0 gives no usable camera; using the default field of view (54°)", stacklevel=2)
        k = make_intrinsics(500.0 * S / 512, 500.0 * S / 512, S / 2, S / 2).astype(np.float64)
    k[0, 0], k[1, 1] = k[0, 0] / box.scale_x, k[1, 1] / box.scale_y
    k[0, 2], k[1, 2] = (k[0, 2] - box.offset_x) / box.scale_x, (k[1, 2] - box.offset_y) / box.scale_y
    return k.astype(np.float32)


def nearest_foreground_index(foreground: np.ndarray, reach: int = 4) -> np.ndarray:
    """(S, S) flat index of the nearest foreground pixel (4-neighbour steps, up to `reach`), -1 beyond."""
    S0, S1 = foreground.shape
    index = np.where(foreground, np.arange(S0 * S1).reshape(S0, S1), -1)
    for _ in range(reach):
        grown = index.copy()
        for axis, step in ((0, 1), (0, -1), (1, 1), (1, -1)):
            neighbour = np.roll(index, step, axis=axis)
            edge: list[int | slice] = [slice(None), slice(None)]
            edge[axis] = 0 if step == 1 else -1
            neighbour[tuple(edge)] = -1  # no wrap-around
            grown = np.where((grown < 0) & (neighbour >= 0), neighbour, grown)
        index = grown
    return index


def restore_layers(
    points: torch.Tensor,
    valid: torch.Tensor,
    box: ImageBox,
    intrinsics: np.ndarray,
    foreground: np.ndarray,
    kept: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Model-resolution layers [K, L, S, S, 3] → input resolution [K, L, H, W, 3].

    Layer 0 is valid on the input's own `foreground` (H, W); each of its pixels takes depth and layer
    validity from the nearest model pixel the model saw as foreground (nearest neighbour: never
    interpolated across a depth jump). `kept` [K, L, S, S] (default: `valid`) is the validity taken
    along: `valid` less the edge filter's flying pixels drops the input pixels those cover. Every
    point is then put on its own pixel's ray, so layer 0 projects onto pixel centres.
    """
    height, width = foreground.shape
    K, L, S0, S1 = valid.shape
    v = (np.arange(height) + 0.5) * box.scale_y + box.offset_y  # model rows of input pixels
    u = (np.arange(width) + 0.5) * box.scale_x + box.offset_x
    rows, cols = np.clip(np.floor(v).astype(int), 0, S0 - 1), np.clip(np.floor(u).astype(int), 0, S1 - 1)
    inside_rows, inside_cols = (v >= 0) & (v < S0), (u >= 0) & (u < S1)
    nearest = nearest_foreground_index(valid[0, 0].cpu().numpy())  # [S0, S1]
    z_model, kept_model = points[..., 2].flatten(2), (valid if kept is None else kept).flatten(2)  # [K, L, S0·S1]
    k = torch.from_numpy(intrinsics)
    x_per_z, y_per_z = pixel_rays(k, 1, width)[0, :, 0], pixel_rays(k, height, 1)[:, 0, 1]  # [W], [H]
    out = torch.empty(K, L, height, width, 3)
    out_valid = torch.empty(K, L, height, width, dtype=torch.bool)
    for r0 in range(0, height, RESTORE_ROWS):  # a band of rows at a time: no full-size temporaries
        r1 = min(height, r0 + RESTORE_ROWS)
        source = nearest[rows[r0:r1, None], cols[None]]  # [h, W]
        usable = foreground[r0:r1] & inside_rows[r0:r1, None] & inside_cols[None] & (source >= 0)
        source_t = torch.from_numpy(np.maximum(source, 0))
        band_valid = kept_model[:, :, source_t] & torch.from_numpy(usable)  # [K, L, h, W]
        z = z_model[:, :, source_t] * band_valid
        out[:, :, r0:r1, :, 0] = z * x_per_z
        out[:, :, r0:r1, :, 1] = z * y_per_z[r0:r1, None]
        out[:, :, r0:r1, :, 2] = z
        out_valid[:, :, r0:r1] = band_valid
    return out, out_valid
