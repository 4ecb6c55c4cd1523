"""Transformer building blocks shared by the WT-DiT decoder and its ViT image encoder.

Axes: N independent sequences, n tokens each, D channels, h heads of hd = D/h channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

# ----------------------------------------------------------------------------------------------
# Rotary position embedding (2-D: first half of each head rotated by the row, second by the column)
# ----------------------------------------------------------------------------------------------


def rope_tables(positions: torch.Tensor, head_dim: int, base: float = 100.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables [n, hd] for integer 2-D positions [n, 2] = (row, col).

    Each half of a head (hd/2 channels) uses the "rotate-half" layout with frequencies
    base^(-2j/(hd/2)), j < hd/4, duplicated; angles are computed in float32.
    """
    half = head_dim // 2
    freqs = base ** (-torch.arange(0, half, 2, dtype=torch.float32, device=positions.device) / half)  # [hd/4]
    angles = positions.float()[..., None] * freqs  # [n, 2, hd/4]
    angles = torch.cat([angles, angles], dim=-1).flatten(-2)  # [n, hd]: row half, then column half
    return angles.cos(), angles.sin()


def rotate_halves(x: torch.Tensor) -> torch.Tensor:
    """Rotate-half within each of the two halves of the last axis: [a1, a2 | b1, b2] → [-a2, a1 | -b2, b1]."""
    x = x.unflatten(-1, (2, 2, -1))  # [..., half, part, hd/4]
    return torch.stack([-x[..., 1, :], x[..., 0, :]], dim=-2).flatten(-3)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [N, h, n, hd] rotated by tables [n, hd]."""
    return x * cos.to(x.dtype) + rotate_halves(x) * sin.to(x.dtype)


def grid_positions(rows: int, cols: int, device: torch.device | None = None) -> torch.Tensor:
    """Row-major integer (row, col) positions of a patch grid, [rows·cols, 2]."""
    r, c = torch.meshgrid(torch.arange(rows, device=device), torch.arange(cols, device=device), indexing="ij")
    return torch.stack([r.flatten(), c.flatten()], dim=-1)


# ----------------------------------------------------------------------------------------------
# Attention, MLP, LayerScale
# ----------------------------------------------------------------------------------------------


def embedding(num: int, dim: int) -> nn.Embedding:
    """nn.Embedding(num, dim) with its N(0, 1) table, whose initialisation is skipped on the meta device
    (models built there to be loaded): a random fill there imports torch's compiler, ~1.8 s, for nothing."""
    table = nn.Embedding(num, dim, _weight=torch.empty(num, dim))
    if not table.weight.is_meta:
        nn.init.normal_(table.weight)
    return table


SHORT_SEQUENCE = 64  # on the CPU, attention over at most this many tokens is computed explicitly


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q·kᵀ/√d)·v for q, k, v [N, h, n, hd] → [N, h, n, hd].

    The fused kernel everywhere except short sequences on the CPU (rays, frames of a clip, small
    layers), where its per-sequence overhead costs more than the explicit n×n weights: 4× less time
    for 256 sequences of 4 tokens in bf16, 1.4× in float32.
    """
    if q.device.type == "cpu" and q.shape[-2] <= SHORT_SEQUENCE:
        return ((q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5).softmax(-1) @ v
    return F.scaled_dot_product_attention(q, k, v)


class Attention(nn.Module):
    """Multi-head self-attention (`attend`: flash kernels on GPU).

    qk_norm: affine LayerNorm over each head's channels of q and k (shared by all heads), before RoPE.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = False, qk_norm: bool = True, norm_eps: float = 1e-5):
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.q_norm = nn.LayerNorm(head_dim, eps=norm_eps) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(head_dim, eps=norm_eps) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "n s (three h d) -> three n h s d", three=3, h=self.num_heads)  # [N, h, n, hd]
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        o = attend(q, k, v)  # [N, h, n, hd]
        return self.proj(rearrange(o, "n h s d -> n s (h d)"))  # [N, n, D]


class Mlp(nn.Module):
    """fc2(GELU(fc1(x))) with exact (erf) GELU."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class LayerScale(nn.Module):
    """Per-channel residual scale `gamma`, initialised to a small constant."""

    def __init__(self, dim: int, init: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma
