"""A visible surface placed like a model's first guess: the camera its rays imply, its depth level.

The anchored sampler (`core/sampling.py`) restarts the visible layer from a shape the model's first
step did not draw — the inflated silhouette for objects (`silhouette.placed_inflation`), a
`DepthNet`'s depth for scenes (`placed_depth`) — and places it where that first guess put the
geometry, so the restart agrees with the layers the model completes behind it.
"""

from __future__ import annotations

import torch

from .points import pixel_rays


def fitted_focal(foreground: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Focal length [B] in pixels: the least-squares fit of the reference's rays to the pixel grid
    (centred principal point) over the foreground, clamped to 0.3–5 × the width.

    foreground: [B, H, W] bool; reference: camera-space points [B, H, W, 3].
    """
    B, H, W = foreground.shape
    w = foreground.float()
    v, u = torch.meshgrid(
        torch.arange(H, device=w.device) + 0.5 - H / 2, torch.arange(W, device=w.device) + 0.5 - W / 2, indexing="ij"
    )
    rays = reference[..., :2] / reference[..., 2:].clamp_min(1e-3)  # [B, H, W, 2]
    num = ((rays[..., 0] * u + rays[..., 1] * v) * w).sum((1, 2))
    den = ((rays**2).sum(-1) * w).sum((1, 2))
    return (num / den.clamp_min(1e-9)).clamp(0.3 * W, 5.0 * W)


def placed_depth(foreground: torch.Tensor, reference: torch.Tensor, log_depth: torch.Tensor) -> torch.Tensor:
    """The visible surface exp(log_depth) along the rays of the reference's fitted camera, scaled so
    that its median depth over the foreground matches the reference's.

    foreground: [B, H, W] bool; reference: camera-space points [B, H, W, 3] (a model's first guess);
    log_depth: [B, H, W] up to a constant (a `DepthNet`'s). Returns camera-space points [B, H, W, 3],
    zero off the foreground.
    """
    B, H, W = foreground.shape
    depth = torch.exp(log_depth)
    out = torch.zeros(B, H, W, 3, device=reference.device, dtype=reference.dtype)
    f = fitted_focal(foreground, reference)
    K = torch.zeros(B, 3, 3, device=reference.device)
    K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = f, f, W / 2, H / 2, 1.0
    rays = pixel_rays(K, H, W).to(reference.dtype)  # [B, H, W, 3]
    for b in range(B):
        fg = foreground[b]
        if not fg.any():
            continue
        level = reference[b, ..., 2][fg].median().clamp_min(1e-6) / depth[b][fg].median().clamp_min(1e-9)
        out[b] = rays[b] * (depth[b] * level * fg)[..., None]
    return out
