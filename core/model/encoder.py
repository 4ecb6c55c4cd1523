"""Image encoder: a ViT laid out like DINOv2 (the MoGe variant the released models freeze).

Our own configs train a small one from scratch; the released configs use ViT-L/14 and load its
weights. The encoder returns the patch tokens of its last `num_features` blocks, each through
the final norm, concatenated and projected to the decoder width D.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .modules import Attention, LayerScale, Mlp

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class EncoderConfig:
    embed_dim: int = 1024  # ViT width (1024 for ViT-L)
    depth: int = 24  # transformer blocks
    num_heads: int = 16
    mlp_ratio: float = 4.0
    pos_grid: int = 37  # side of the stored positional table (518 px / 14 for DINOv2)
    num_features: int = 4  # last blocks whose tokens are concatenated
    layerscale_init: float = 1.0
    frozen: bool = True  # released models keep the encoder frozen; ours train it

    def __post_init__(self) -> None:
        for name in ("embed_dim", "depth", "num_heads", "pos_grid"):
            if getattr(self, name) < 1:
                raise ValueError(f"encoder {name} must be at least 1, got {getattr(self, name)}")
        if self.embed_dim % self.num_heads or self.mlp_ratio <= 0:
            raise ValueError(
                f"encoder embed_dim {self.embed_dim} must be a multiple of num_heads {self.num_heads}, mlp_ratio > 0"
            )
        if not 1 <= self.num_features <= self.depth:
            raise ValueError(f"num_features must be between 1 and depth ({self.depth}), got {self.num_features}")


class EncoderBlock(nn.Module):
    """Pre-norm ViT block: x += ls1(attn(norm1(x))); x += ls2(mlp(norm2(x)))."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        dim = cfg.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, cfg.num_heads, qkv_bias=True, qk_norm=False)
        self.ls1 = LayerScale(dim, cfg.layerscale_init)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio))
        self.ls2 = LayerScale(dim, cfg.layerscale_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """Non-overlapping patches → tokens: a strided convolution [N, 3, H, W] → [N, C, H/p, W/p]."""

    def __init__(self, dim: int, patch_size: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)


class ImageEncoder(nn.Module):
    """ViT over an image in [0, 1]: [N, 3, H, W] → patch features [N, P, out_dim]."""

    image_mean: torch.Tensor  # buffers [1, 3, 1, 1]
    image_std: torch.Tensor

    def __init__(self, cfg: EncoderConfig, patch_size: int, out_dim: int):
        super().__init__()
        self.cfg, self.patch_size = cfg, patch_size
        dim = cfg.embed_dim
        self.register_buffer("image_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("image_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.patch_embed = PatchEmbed(dim, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + cfg.pos_grid**2, dim))
        self.blocks = nn.ModuleList(EncoderBlock(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.final_project = nn.Linear(cfg.num_features * dim, out_dim)

    def initialize_weights(self) -> None:
        """Its own tables' initialisation (the linear layers are the model's `initialize_weights`)."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)

    def positional_embedding(self, rows: int, cols: int) -> torch.Tensor:
        """[1, 1 + rows·cols, C]: the stored table, resampled when the grid differs.

        Resampling follows DINOv2: bicubic (a = -0.75), no antialias, in float32, with the scale
        factor (n + 0.1) / grid so source coordinates are (dst + 0.5)·grid/(n + 0.1) - 0.5.
        """
        g = self.cfg.pos_grid
        if rows == g and cols == g:
            return self.pos_embed
        table = rearrange(self.pos_embed[:, 1:].float(), "1 (h w) c -> 1 c h w", h=g)
        table = F.interpolate(
            table,
            scale_factor=((rows + 0.1) / g, (cols + 0.1) / g),
            mode="bicubic",
            align_corners=False,
            antialias=False,
        )
        assert table.shape[-2:] == (rows, cols)
        table = rearrange(table, "1 c h w -> 1 (h w) c").to(self.pos_embed.dtype)
        return torch.cat([self.pos_embed[:, :1], table], dim=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image: [N, 3, H, W] in [0, 1], H and W multiples of the patch size. Returns [N, P, out_dim]."""
        N, _, H, W = image.shape
        rows, cols = H // self.patch_size, W // self.patch_size
        x = (image - self.image_mean) / self.image_std
        x = x.to(self.patch_embed.proj.weight.dtype)
        x = rearrange(self.patch_embed.proj(x), "n c h w -> n (h w) c")  # [N, P, C]
        x = torch.cat([self.cls_token.expand(N, -1, -1), x], dim=1)  # [N, 1+P, C]
        x = x + self.positional_embedding(rows, cols)
        features = []
        first = len(self.blocks) - self.cfg.num_features
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i >= first:
                features.append(self.norm(x)[:, 1:])  # [N, P, C]
        stacked = torch.cat(features, dim=-1)  # [N, P, num_features·C]
        return self.final_project(stacked.to(self.final_project.weight.dtype))  # [N, P, out_dim]
