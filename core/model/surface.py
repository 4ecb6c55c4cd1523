"""The visible surface's profile from the image and its mask (ours, object models): a small U-Net.

Silhouette inflation (core/geometry/silhouette.py) gives each foreground pixel the half-thickness
o = ρ · r/f · depth, with the round profile ρ = sqrt(1 − (1 − d/r)²) of the distance transform d
(r = max d). `SurfaceNet` predicts a profile that shading and outline bend away from the round one:
ρ + Δ, where Δ comes from the RGB, the mask, d/r and ρ through a four-level U-Net at full
resolution. Its last convolution starts at zero, so an untrained net is the inflation. The anchored
sampler restarts the visible layer from the front this profile implies, placed like the model's
first guess (`placed_inflation(..., profile=...)`); `core/train/surface.py` trains it alone on the
aligned visible-depth error, the rest of the model untouched.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..geometry.silhouette import distance_to_background, round_profile

WIDTHS = (1, 2, 4, 6)  # channels of each level, in multiples of the full-resolution width
INPUTS = 3 + 1 + 1 + 1  # RGB, mask, d/r, round profile


def conv_block(cin: int, cout: int) -> nn.Sequential:
    """Two 3×3 convolutions, each followed by GroupNorm (8 groups) and SiLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU(),
        nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU(),
    )  # fmt: skip


class SurfaceNet(nn.Module):
    """RGB [B, 3, H, W] + foreground [B, H, W] → the visible layer's profile ρ + Δ [B, H, W] (0 on the
    background). H and W must be multiples of 8; `width` (a multiple of 8) is the channel count at
    full resolution."""

    def __init__(self, width: int):
        super().__init__()
        channels = [width * k for k in WIDTHS]
        self.down = nn.ModuleList(
            conv_block(cin, cout) for cin, cout in zip([INPUTS, *channels[:-1]], channels, strict=True)
        )
        self.up = nn.ModuleList(conv_block(channels[i + 1] + channels[i], channels[i]) for i in range(len(WIDTHS) - 1))
        self.out = nn.Conv2d(width, 1, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(cast(torch.Tensor, self.out.bias))

    def forward(
        self, image: torch.Tensor, foreground: torch.Tensor, distance: torch.Tensor | None = None
    ) -> torch.Tensor:
        """distance: the foreground's distance transform [B, H, W] when already known (training)."""
        d = distance_to_background(foreground) if distance is None else distance
        rho, r = round_profile(d)
        mask = foreground.to(image.dtype)
        x = torch.cat([image, mask[:, None], (d / r)[:, None], rho[:, None]], 1)  # [B, 6, H, W]
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.avg_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for block in reversed(self.up):
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skips.pop()], 1))
        return (rho + self.out(x)[:, 0]) * mask
