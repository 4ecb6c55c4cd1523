"""The shape a foreground mask alone implies (silhouette inflation), in torch.

With `d` the Euclidean distance transform of the mask and r = max(d), each foreground pixel gets a
half-thickness o = sqrt(1 − (1 − d/r)²) · r/f · depth (a round profile whose thickness on the
medial axis equals the silhouette's half-width at that depth); layer 0 lies at depth − o and
layer 1 at depth + o along the pixel's ray of a centred pinhole with focal length f (pixels).
The evaluation's non-learned floor uses it as it is; models with `silhouette_prior` start from it,
and the anchored sampler (`core/sampling.py`) restarts the visible layer from it, placed like the
model's first guess (`placed_inflation`) — bent by the model's `SurfaceNet` when it has one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .placement import fitted_focal

CHUNK = 4096  # foreground pixels per distance computation (bounds memory at CHUNK × border pixels)


def distance_to_background(foreground: torch.Tensor) -> torch.Tensor:
    """Exact Euclidean distance (pixels) from each foreground pixel to the nearest background pixel,
    0 on the background; a mask without background measures to the pixels just outside the frame.

    foreground: [B, H, W] bool → [B, H, W] float32.
    """
    B, H, W = foreground.shape
    device = foreground.device
    out = torch.zeros(B, H, W, device=device)
    background = F.pad(~foreground, (1, 1, 1, 1), value=True)  # the frame's outside counts only if nothing else does
    for b in range(B):
        fg = foreground[b]
        if not fg.any():
            continue
        bg = background[b].clone()
        if (~fg).any():
            bg[0, :] = bg[-1, :] = bg[:, 0] = bg[:, -1] = False
        # the nearest background pixel always has a foreground 4-neighbour: only those are candidates
        near = F.max_pool2d(F.pad(fg, (1, 1, 1, 1)).float()[None, None], 3, 1, 1)[0, 0] > 0
        border = torch.nonzero(bg & near).float() - 1  # [M, 2] in image coordinates
        points = torch.nonzero(fg).float()  # [N, 2]
        d = torch.cat([torch.cdist(chunk, border).amin(1) for chunk in points.split(CHUNK)])
        out[b][fg] = d
    return out


def round_profile(distance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(ρ [B, H, W], r [B, 1, 1]): the round profile sqrt(1 − (1 − d/r)²) of a distance transform d
    [B, H, W] (0 on the background) and r = max d."""
    r = distance.flatten(1).amax(1).clamp_min(1e-6)[:, None, None]
    return torch.sqrt((1 - (1 - distance / r) ** 2).clamp(0, 1)) * (distance > 0), r


def inflate(
    foreground: torch.Tensor, focal: float, depth: float, num_layers: int = 2, profile: torch.Tensor | None = None
) -> torch.Tensor:
    """Camera-space points [B, L, H, W, 3] of the inflated silhouette: layer 0 the front, layer 1 the
    back, further layers repeating layer 1 (no more crossings, as forward-filled targets are); zero
    on the background. foreground: [B, H, W] bool; focal in pixels; depth of the silhouette's plane;
    profile: [B, H, W] in place of the round one (a `SurfaceNet`'s)."""
    B, H, W = foreground.shape
    rho, r = round_profile(distance_to_background(foreground))
    o = (rho if profile is None else profile) * r / focal * depth  # [B, H, W]
    layers = torch.stack([depth - o] + [depth + o] * (num_layers - 1), 1)[:, :num_layers]  # [B, L, H, W]
    v, u = torch.meshgrid(torch.arange(H, device=o.device) + 0.5, torch.arange(W, device=o.device) + 0.5, indexing="ij")
    rays = torch.stack([(u - W / 2) / focal, (v - H / 2) / focal, torch.ones_like(u)], -1)  # [H, W, 3], z = 1
    return layers[..., None] * rays * foreground[:, None, ..., None]


def placed_inflation(
    foreground: torch.Tensor, reference: torch.Tensor, profile: torch.Tensor | None = None
) -> torch.Tensor:
    """The inflated silhouette's front (layer 0) placed like a reference surface.

    foreground: [B, H, W] bool; reference: camera-space points [B, H, W, 3] of a layer-0 guess (a
    model's prediction, or the truth in training); profile: [B, H, W] in place of the round one. The
    focal length is the least-squares fit of the reference's rays to the pixel grid (centred principal
    point), and the depth is scaled so that its mean over the foreground matches the reference's.
    Returns camera-space points [B, H, W, 3], zero on the background.
    """
    B = foreground.shape[0]
    w = foreground.float()
    focal = fitted_focal(foreground, reference)  # [B]
    out = []
    for b in range(B):
        shape = None if profile is None else profile[b : b + 1]
        front = inflate(foreground[b : b + 1], float(focal[b]), 1.0, 1, shape)[0, 0]  # [H, W, 3]
        depth = (reference[b, ..., 2] * w[b]).sum() / (front[..., 2] * w[b]).sum().clamp_min(1e-9)
        out.append(front * depth.clamp_min(1e-6))
    return torch.stack(out)
