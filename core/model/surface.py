"""Full-resolution convolutional nets that shape the anchored sampler's visible layer (ours).

Objects — silhouette inflation (core/geometry/silhouette.py) gives each foreground pixel the
half-thickness o = ρ · r/f · depth, with the round profile ρ = sqrt(1 − (1 − d/r)²) of the distance
transform d (r = max d). `SurfaceNet` predicts a profile that shading and outline bend away from the
round one: ρ + Δ, where Δ comes from the RGB, the mask, d/r and ρ.
Scenes — a frame has no silhouette: `DepthNet` predicts the visible layer's log-depth (up to a
constant) from the RGB, the mask (sky and openings are off it) and the pixel's position.

Both are the same four-level `UNet` whose last convolution starts at zero, so an untrained
SurfaceNet is the inflation and an untrained DepthNet a constant depth. The anchored sampler
restarts the visible layer from the front they imply, placed like the model's first guess
(core/geometry/placement.py); `core/train/surface.py` trains them alone on the aligned
visible-depth error, the rest of the model untouched.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..geometry.silhouette import distance_to_background, round_profile

WIDTHS = (1, 2, 4, 6)  # channels of each level, in multiples of the full-resolution width
SURFACE_INPUTS = 3 + 1 + 1 + 1  # RGB, mask, d/r, round profile
DEPTH_INPUTS = 3 + 1 + 2  # RGB, mask, pixel position (u, v in [-1, 1])
LOG_DEPTH_RANGE = 6.0  # DepthNet's log-depth is clamped to ±this (e^6 ≈ 400× the median)


def conv_block(cin: int, cout: int) -> nn.Sequential:
    """Two 3×3 convolutions, each followed by GroupNorm (8 groups) and SiLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU(),
        nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU(),
    )  # fmt: skip


class UNet(nn.Module):
    """[B, inputs, H, W] → [B, H, W]: four levels (average-pool down, bilinear up, skips), `width` (a
    multiple of 8) channels at full resolution; H and W multiples of 8. The output convolution
    starts at zero."""

    def __init__(self, inputs: int, width: int):
        super().__init__()
        channels = [width * k for k in WIDTHS]
        self.down = nn.ModuleList(
            conv_block(cin, cout) for cin, cout in zip([inputs, *channels[:-1]], channels, strict=True)
        )
        self.up = nn.ModuleList(conv_block(channels[i + 1] + channels[i], channels[i]) for i in range(len(WIDTHS) - 1))
        self.out = nn.Conv2d(width, 1, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(cast(torch.Tensor, self.out.bias))

    def run(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.avg_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for block in reversed(self.up):
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skips.pop()], 1))
        return self.out(x)[:, 0]


class SurfaceNet(UNet):
    """RGB [B, 3, H, W] + foreground [B, H, W] → the visible layer's profile ρ + Δ [B, H, W] (0 on the
    background)."""

    def __init__(self, width: int):
        super().__init__(SURFACE_INPUTS, width)

    def forward(
        self, image: torch.Tensor, foreground: torch.Tensor, distance: torch.Tensor | None = None
    ) -> torch.Tensor:
        """distance: the foreground's distance transform [B, H, W] when already known (training)."""
        d = distance_to_background(foreground) if distance is None else distance
        rho, r = round_profile(d)
        mask = foreground.to(image.dtype)
        x = torch.cat([image, mask[:, None], (d / r)[:, None], rho[:, None]], 1)  # [B, 6, H, W]
        return (rho + self.run(x)) * mask


class DepthNet(UNet):
    """RGB [B, 3, H, W] + foreground [B, H, W] → the visible layer's log-depth [B, H, W], up to an
    additive constant (0 off the foreground)."""

    def __init__(self, width: int):
        super().__init__(DEPTH_INPUTS, width)

    def forward(self, image: torch.Tensor, foreground: torch.Tensor) -> torch.Tensor:
        B, _, H, W = image.shape
        mask = foreground.to(image.dtype)
        v, u = torch.meshgrid(
            torch.linspace(-1, 1, H, device=image.device, dtype=image.dtype),
            torch.linspace(-1, 1, W, device=image.device, dtype=image.dtype),
            indexing="ij",
        )
        x = torch.cat([image, mask[:, None], torch.stack([u, v]).expand(B, 2, H, W)], 1)  # [B, 6, H, W]
        return self.run(x).clamp(-LOG_DEPTH_RANGE, LOG_DEPTH_RANGE) * mask
