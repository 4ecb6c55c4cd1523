"""WT-DiT: a diffusion transformer over layered, pixel-aligned geometry (World Tracing, DESIGN.md §2).

Axes: B batch, T frames (1 for single images), L geometry layers, V = T·L, H×W pixels,
p patch size, P = (H/p)·(W/p) patches per layer, D width.

Every layer of every patch is a token. A token is [image half ‖ geometry half]: encoder features
plus a learned layer embedding (standardised, scaled, projected to D/2), and the noisy XYZ patch
with the RGB patch (projected to D/2). Blocks cycle through three attention shapes —
frame (the P tokens of one layer, 2-D RoPE), ray (the L tokens of one patch position) and global
(all L·P tokens, 2-D RoPE) — with AdaLN timestep modulation, qk-norm and LayerScale; a per-layer
FiLM precedes every frame block. A separate 6-block head and a linear unpatchify give x̂0.
The network maps (x_t, t, image) to the clean sample x̂0 and knows nothing of the noise process
(see `sampling.py` and `flow.py`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import cast

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from ..geometry.camera import fov_to_focal
from ..geometry.points import OBJECT_MEAN, OBJECT_STD
from ..geometry.silhouette import inflate
from .encoder import EncoderConfig, ImageEncoder
from .modules import Attention, LayerScale, Mlp, embedding, grid_positions, rope_tables
from .surface import DepthNet, SurfaceNet

BLOCK_TYPES = ("frame", "ray", "global")


PRIOR_FOV = math.radians(54.0)  # field of view the silhouette prior is seen with (the inflation floor's)


@dataclass
class WTDiTConfig:
    image_size: int = 128  # square input side in pixels (multiple of patch_size)
    patch_size: int = 16  # pixels per patch side (14 in the released models)
    num_layers: int = 4  # L geometry layers per pixel
    dim: int = 192  # D, decoder width
    num_heads: int = 3  # attention heads (head width D / heads, a multiple of 4 for 2-D RoPE)
    depth: int = 6  # decoder blocks, cycling frame → ray → global
    head_depth: int = 3  # head blocks, same cycle
    mlp_ratio: float = 4.0  # MLP hidden width / D
    layer_conditioning: str = "film"  # "film", or "film_adaln" (adds per-layer AdaLN to frame blocks)
    temporal: bool = False  # a temporal block after every global block (the dynamic model)
    img_token_scale: float = 0.3  # image tokens are standardised then scaled by this
    rope_base: float = 100.0  # RoPE frequency base
    layerscale_init: float = 1e-4  # initial LayerScale of decoder and head blocks
    encoder: EncoderConfig = field(default_factory=EncoderConfig)  # image encoder
    silhouette_prior: bool = False  # ours, objects: x̂0 = placed inflated mask + the head's output (needs the mask)
    refine_width: int = 0  # ours: channels of a full-resolution conv refinement of x̂0 that sees the RGB (0: none)
    surface_width: int = 0  # ours, objects: full-resolution channels of the SurfaceNet that shapes the anchor (0: none)
    depth_width: int = 0  # ours, scenes: full-resolution channels of the DepthNet the anchor reads (0: none)

    def __post_init__(self) -> None:
        if isinstance(self.encoder, dict):
            self.encoder = EncoderConfig(**self.encoder)
        for name in ("image_size", "patch_size", "num_layers", "dim", "num_heads", "depth"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.head_depth < 0 or self.mlp_ratio <= 0:
            raise ValueError(f"head_depth must be ≥ 0 and mlp_ratio > 0, got {self.head_depth}, {self.mlp_ratio}")
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not a multiple of num_heads {self.num_heads}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if (self.dim // self.num_heads) % 4:
            raise ValueError("head width must be a multiple of 4 for 2-D RoPE")
        if self.layer_conditioning not in ("film", "film_adaln"):
            raise ValueError(f"unknown layer_conditioning {self.layer_conditioning!r}")
        if self.refine_width < 0:
            raise ValueError(f"refine_width must be ≥ 0, got {self.refine_width}")
        if self.silhouette_prior and self.temporal:
            raise ValueError("silhouette_prior is for single images (object mode), not temporal models")
        for name in ("surface_width", "depth_width"):
            if getattr(self, name) < 0 or getattr(self, name) % 8:
                raise ValueError(f"{name} must be a multiple of 8 (0: none), got {getattr(self, name)}")
        if self.surface_width and self.depth_width:
            raise ValueError("a model anchors on a SurfaceNet (objects) or a DepthNet (scenes), not both")

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------------------------
# Helpers and embedders
# ----------------------------------------------------------------------------------------------


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """[..., H, W, c] → [..., P, p·p·c]; patches row-major, features (row, col, channel)."""
    return rearrange(x, "... (h p1) (w p2) c -> ... (h w) (p1 p2 c)", p1=p, p2=p)


def unpatchify(x: torch.Tensor, p: int, rows: int) -> torch.Tensor:
    """[..., P, p·p·c] → [..., H, W, c], the inverse of `patchify` for a grid of `rows` patch rows."""
    return rearrange(x, "... (h w) (p1 p2 c) -> ... (h p1) (w p2) c", h=rows, p1=p, p2=p)


def timestep_sinusoid(t: torch.Tensor, dim: int = 256, scale: float = 1000.0) -> torch.Tensor:
    """[...] times in [0, 1] → [..., dim] features [cos(τω), sin(τω)], τ = scale·t, ω_k = 10000^(-2k/dim)."""
    tau = (scale * t.float()).double()
    omega = 10000.0 ** (-torch.arange(dim // 2, dtype=torch.float64, device=t.device) / (dim // 2))
    angles = tau[..., None] * omega
    return torch.cat([angles.cos(), angles.sin()], dim=-1).float()


class TimestepEmbedder(nn.Module):
    """t → six AdaLN vectors: sinusoid(1000·t) → Linear, SiLU, Linear → SiLU, Linear → [..., 6, D]."""

    def __init__(self, dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.embed = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        e = self.embed(timestep_sinusoid(t, self.freq_dim))  # [..., D]
        return self.modulation(e).unflatten(-1, (6, -1))  # [..., 6, D]


class LayerFiLM(nn.Module):
    """Per-layer scale and shift from a learned layer embedding: [γ ‖ β] = Linear(GELU(Linear(e_l)))."""

    def __init__(self, num_layers: int, dim: int):
        super().__init__()
        self.layer_embed = embedding(num_layers, dim)
        self.proj = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, 2 * dim))

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        gamma, beta = self.proj(self.layer_embed.weight).chunk(2, dim=-1)  # [L, D] each
        return gamma, beta


# ----------------------------------------------------------------------------------------------
# The DiT block (decoder, head and temporal blocks alike)
# ----------------------------------------------------------------------------------------------


class DiTBlock(nn.Module):
    """AdaLN-modulated pre-norm block with qk-norm attention, LayerScale and gates.

    Its own `modulation` [6·D] is added to the conditioning; rows are
    (shift, scale, gate) for attention, then for the MLP.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, layerscale_init: float):
        super().__init__()
        self.modulation = nn.Parameter(torch.empty(6 * dim))  # N(0, 1/D): `WTDiT.initialize_weights`
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.attn = Attention(dim, num_heads, qkv_bias=False, qk_norm=True)
        self.ls1 = LayerScale(dim, layerscale_init)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, layerscale_init)

    def forward(
        self, x: torch.Tensor, ada: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None
    ) -> torch.Tensor:
        """x [N, n, D]; ada [N, 6, D]; rope tables [n, hd] or None. Returns [N, n, D]."""
        mod = self.modulation.view(6, -1) + ada  # [N, 6, D]
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = mod.unsqueeze(-2).unbind(dim=-3)  # [N, 1, D] each
        x = x + gate_a * self.ls1(self.attn(modulate(self.norm1(x), shift_a, scale_a), rope))
        return x + gate_m * self.ls2(self.mlp(modulate(self.norm2(x), shift_m, scale_m)))


def run_block(
    block: nn.Module, kind: str, x: torch.Tensor, ada_layer: torch.Tensor, ada_mean: torch.Tensor, ropes: dict, T: int
) -> torch.Tensor:
    """Apply `block` to canonical tokens x [B, V, P, D] in the attention shape `kind`.

    ada_layer [B, L, 6, D] conditions frame blocks (each layer its own t); ada_mean [B, 6, D]
    conditions ray, global and temporal blocks. Returns [B, V, P, D].
    """
    B, V, P, _ = x.shape
    L = V // T
    if kind == "frame":
        seq = rearrange(x, "b v p d -> (b v) p d")  # [B·V, P, D]
        ada = rearrange(repeat(ada_layer, "b l s d -> b t l s d", t=T), "b t l s d -> (b t l) s d")
        return rearrange(block(seq, ada, ropes["frame"]), "(b v) p d -> b v p d", b=B)
    if kind == "ray":
        seq = rearrange(x, "b (t l) p d -> (b t p) l d", t=T)  # [B·T·P, L, D]
        ada = repeat(ada_mean, "b s d -> (b t p) s d", t=T, p=P)
        return rearrange(block(seq, ada, None), "(b t p) l d -> b (t l) p d", b=B, t=T)
    if kind == "global":
        seq = rearrange(x, "b (t l) p d -> (b t) (l p) d", t=T)  # [B·T, L·P, D]
        ada = repeat(ada_mean, "b s d -> (b t) s d", t=T)
        return rearrange(block(seq, ada, ropes["global"]), "(b t) (l p) d -> b (t l) p d", b=B, l=L)
    if kind == "temporal":
        seq = rearrange(x, "b (t l) p d -> (b l p) t d", t=T)  # [B·L·P, T, D]
        ada = repeat(ada_mean, "b s d -> (b l p) s d", l=L, p=P)
        return rearrange(block(seq, ada, ropes["temporal"]), "(b l p) t d -> b (t l) p d", b=B, l=L)
    raise ValueError(kind)


# ----------------------------------------------------------------------------------------------
# Head
# ----------------------------------------------------------------------------------------------


class GeometryHead(nn.Module):
    """Head blocks (frame/ray/global cycle) with their own layer FiLM, then a linear map per token
    to a p×p×3 patch of x̂0."""

    def __init__(self, cfg: WTDiTConfig):
        super().__init__()
        self.film = LayerFiLM(cfg.num_layers, cfg.dim)
        self.blocks = nn.ModuleList(
            DiTBlock(cfg.dim, cfg.num_heads, cfg.mlp_ratio, cfg.layerscale_init) for _ in range(cfg.head_depth)
        )
        self.out = nn.Linear(cfg.dim, cfg.patch_size**2 * 3)

    def forward(
        self, x: torch.Tensor, ada_layer: torch.Tensor, ada_mean: torch.Tensor, ropes: dict, T: int
    ) -> torch.Tensor:
        """x [B, V, P, D] → [B, V, P, p·p·3]."""
        x = run_stack(self.blocks, self.film(), x, ada_layer, ada_mean, ropes, T)
        return self.out(x)


class RefineHead(nn.Module):
    """Ours: a per-pixel correction of the unpatchified x̂0 at full resolution, so that detail and
    edges need not come from 16-px patches. Per layer, three 3×3 convolutions (GELU between) see the
    coarse x̂0, the noisy x_t, the RGB and the foreground mask; a learned per-layer bias after the
    first tells the layers apart. The last convolution starts at zero: the head starts as identity."""

    def __init__(self, num_layers: int, width: int):
        super().__init__()
        self.inp = nn.Conv2d(3 + 3 + 3 + 1, width, 3, padding=1)
        self.layer_bias = embedding(num_layers, width)
        self.mid = nn.Conv2d(width, width, 3, padding=1)
        self.out = nn.Conv2d(width, 3, 3, padding=1)

    def forward(
        self, coarse: torch.Tensor, x_t: torch.Tensor, image: torch.Tensor, foreground: torch.Tensor
    ) -> torch.Tensor:
        """coarse, x_t [B, V, H, W, 3]; image [B, T, 3, H, W]; foreground [B, H, W] → refined [B, V, H, W, 3]."""
        B, V = coarse.shape[:2]
        T = image.shape[1]
        rgb = repeat(image, "b t c h w -> (b t l) c h w", l=V // T)
        mask = repeat(foreground.to(coarse.dtype), "b h w -> (b v) 1 h w", v=V)
        channels = [rearrange(coarse, "b v h w c -> (b v) c h w"), rearrange(x_t, "b v h w c -> (b v) c h w")]
        x = torch.cat([*channels, rgb.to(coarse.dtype), mask], 1)  # [B·V, 10, H, W]
        bias = repeat(self.layer_bias.weight, "l c -> (b t l) c 1 1", b=B, t=T)
        x = self.out(F.gelu(self.mid(F.gelu(self.inp(x) + bias))))  # [B·V, 3, H, W]
        return coarse + rearrange(x, "(b v) c h w -> b v h w c", b=B)


def apply_film(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, T: int) -> torch.Tensor:
    """x [B, V, P, D] ⊙ (1 + γ_l) + β_l with γ, β [L, D] repeated over frames."""
    gamma, beta = gamma.repeat(T, 1)[:, None], beta.repeat(T, 1)[:, None]  # [V, 1, D]
    return x * (1 + gamma) + beta


def run_stack(
    blocks: nn.ModuleList,
    film: tuple[torch.Tensor, torch.Tensor],
    x: torch.Tensor,
    ada_frame: torch.Tensor,
    ada_mean: torch.Tensor,
    ropes: dict,
    T: int,
    temporal_blocks: nn.ModuleList | None = None,
) -> torch.Tensor:
    """Blocks cycling frame → ray → global on x [B, V, P, D], the layer FiLM (γ, β [L, D]) before every
    frame block, and a temporal block after every global one when given (and T > 1)."""
    gamma, beta = film
    for i, block in enumerate(blocks):
        kind = BLOCK_TYPES[i % 3]
        if kind == "frame":
            x = apply_film(x, gamma, beta, T)
        x = run_block(block, kind, x, ada_frame, ada_mean, ropes, T)
        if kind == "global" and temporal_blocks is not None and T > 1:
            x = run_block(temporal_blocks[i // 3], "temporal", x, ada_frame, ada_mean, ropes, T)
    return x


# ----------------------------------------------------------------------------------------------
# WT-DiT
# ----------------------------------------------------------------------------------------------


class WTDiT(nn.Module):
    def __init__(self, cfg: WTDiTConfig):
        super().__init__()
        self.cfg = cfg
        D, p = cfg.dim, cfg.patch_size
        self.encoder = ImageEncoder(cfg.encoder, p, D)
        self.image_proj = nn.Linear(D, D // 2)
        # [RGB patch ‖ XYZ patch], and the prior's XYZ patch when the model starts from the silhouette
        self.geometry_proj = nn.Linear((3 if cfg.silhouette_prior else 2) * p * p * 3, D // 2)
        self.time_embed = TimestepEmbedder(D)
        self.film = LayerFiLM(cfg.num_layers, D)
        if cfg.layer_conditioning == "film_adaln":
            self.layer_adaln = nn.Sequential(nn.SiLU(), nn.Linear(D, 6 * D))
        self.blocks = nn.ModuleList(
            DiTBlock(D, cfg.num_heads, cfg.mlp_ratio, cfg.layerscale_init) for _ in range(cfg.depth)
        )
        if cfg.temporal:
            self.temporal_blocks = nn.ModuleList(
                DiTBlock(D, cfg.num_heads, cfg.mlp_ratio, cfg.layerscale_init) for _ in range(cfg.depth // 3)
            )
        self.head = GeometryHead(cfg)
        if cfg.silhouette_prior:
            self.prior_placement = nn.Linear(D, 4)  # (log scale, z shift, tilt) of the prior, from the mean token
        if cfg.refine_width:
            self.refine = RefineHead(cfg.num_layers, cfg.refine_width)
        # not part of forward: the anchored sampler asks them for the visible layer (core/inference.py)
        self.surface = SurfaceNet(cfg.surface_width) if cfg.surface_width else None
        self.depth = DepthNet(cfg.depth_width) if cfg.depth_width else None
        if not self.head.out.weight.is_meta:  # built on the meta device to be loaded: nothing to initialise
            self.initialize_weights()

    def initialize_weights(self) -> None:
        """Training-from-scratch initialisation (loaded checkpoints overwrite all of it)."""
        self.encoder.initialize_weights()
        # Linear layers: Xavier uniform weights, zero biases (encoder included).
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        # Each block's own modulation: N(0, 1/D).
        for m in self.modules():
            if isinstance(m, DiTBlock):
                nn.init.normal_(m.modulation, std=(m.modulation.numel() // 6) ** -0.5)
        # Layer embeddings: small normal.
        for film in (self.film, self.head.film):
            nn.init.normal_(film.layer_embed.weight, std=0.02)
            # FiLM output layers start at zero: identity modulation.
            last = cast(nn.Linear, film.proj[-1])
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        if self.cfg.layer_conditioning == "film_adaln":
            adaln = cast(nn.Linear, self.layer_adaln[-1])
            nn.init.zeros_(adaln.weight)
            nn.init.zeros_(adaln.bias)
        # Timestep MLP: small normal, as in DiT.
        for k in (0, 2):
            nn.init.normal_(cast(nn.Linear, self.time_embed.embed[k]).weight, std=0.02)
        # Output layer starts at zero: x̂0 = 0 (the mean of normalised points), or the prior, before training.
        nn.init.zeros_(self.head.out.weight)
        nn.init.zeros_(self.head.out.bias)
        if self.cfg.silhouette_prior:  # the prior starts where the inflation floor puts it
            nn.init.zeros_(self.prior_placement.weight)
            nn.init.zeros_(self.prior_placement.bias)
        if self.cfg.refine_width:
            nn.init.zeros_(self.refine.out.weight)
            nn.init.zeros_(cast(torch.Tensor, self.refine.out.bias))

    def ropes(self, rows: int, cols: int, T: int, device: torch.device) -> dict:
        """RoPE tables for frame ([P, hd]), global ([L·P, hd]) and temporal ([T, hd]) sequences."""
        hd = self.cfg.dim // self.cfg.num_heads
        pos = grid_positions(rows, cols, device)  # [P, 2]
        frame = rope_tables(pos, hd, self.cfg.rope_base)
        ropes = {"frame": frame, "global": tuple(t.repeat(self.cfg.num_layers, 1) for t in frame)}
        if self.cfg.temporal:
            frames = torch.stack([torch.arange(T, device=device), torch.zeros(T, dtype=torch.long, device=device)], -1)
            ropes["temporal"] = rope_tables(frames, hd, self.cfg.rope_base)
        return ropes

    def inflated(self, foreground: torch.Tensor) -> torch.Tensor:
        """The prior's shape, camera-space points [B, L, H, W, 3]: the inflated mask
        (core/geometry/silhouette.py) at the training objects' mean depth, seen with the inflation
        floor's 54° field of view. foreground [B, H, W] bool."""
        W = foreground.shape[-1]
        return inflate(foreground, fov_to_focal(PRIOR_FOV, W), OBJECT_MEAN[2], self.cfg.num_layers)

    def silhouette(
        self, foreground: torch.Tensor, placement: torch.Tensor | None = None, inflated: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The prior in network units [B, L, H, W, 3]: the inflated mask (or `inflated`, computed
        already), placed by placement [B, 4] (None: as inflated): tilted — each point slides along its
        ray to depth · (1 + a·x/z + b·y/z), a plane of depth change across the image with (a, b) =
        placement[:, 2:] — then scaled by exp(placement[:, 0]) about the camera and moved
        placement[:, 1] z-deviations back. Scale and z shift are what the evaluation's alignment
        ignores; the tilt is the object's slant, which the mask alone cannot tell. The head's output
        is left to correct the rest of the shape."""
        points = self.inflated(foreground) if inflated is None else inflated
        if placement is not None:
            scale, shift = placement[:, 0].exp(), placement[:, 1] * OBJECT_STD[2]  # [B] each
            rays = points[..., :2] / points[..., 2:].clamp_min(1e-6)  # [B, L, H, W, 2]: x/z, y/z
            tilt = 1 + (rays * placement[:, None, None, None, 2:]).sum(-1, keepdim=True)  # [B, L, H, W, 1]
            z = torch.stack([torch.zeros_like(shift), torch.zeros_like(shift), shift], -1)  # [B, 3]
            points = points * tilt * scale[:, None, None, None, None] + (
                z[:, None, None, None] * foreground[:, None, ..., None]
            )
        return (points - points.new_tensor(OBJECT_MEAN)) / points.new_tensor(OBJECT_STD)

    def image_tokens(self, image: torch.Tensor) -> torch.Tensor:
        """The image half of the tokens [B, V, P, D/2] for image [B, 3, H, W] or [B, T, 3, H, W]: encoder
        features + layer embedding, standardised per sample, scaled, projected. They depend on the image
        alone, so a sampler computes them once (`forward`'s `image_tokens`)."""
        if image.dim() == 4:
            image = image[:, None]
        B = image.shape[0]
        feats = self.encoder(image.flatten(0, 1)).float()  # [B·T, P, D]
        feats = (
            rearrange(feats, "(b t) p d -> b t 1 p d", b=B) + self.film.layer_embed.weight[:, None]
        )  # [B, T, L, P, D]
        feats = rearrange(feats, "b t l p d -> b (t l) p d")  # [B, V, P, D]
        mean = feats.mean(dim=(1, 2, 3), keepdim=True)
        var = feats.var(dim=(1, 2, 3), keepdim=True, unbiased=False)
        return self.image_proj(self.cfg.img_token_scale * (feats - mean) / torch.sqrt(var + 1e-6))

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        image: torch.Tensor,
        foreground: torch.Tensor | None = None,
        image_tokens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict the clean sample.

        x_t:   [B, V, H, W, 3] noisy normalised points (V = T·L, frame-major).
        t:     [B] one time per sample, or [B, L] one per layer (1 = pure noise).
        image: [B, 3, H, W] or [B, T, 3, H, W] RGB in [0, 1].
        foreground: [B, H, W] bool, needed by models with `silhouette_prior` (the refinement head uses it
        when given, else treats every pixel as foreground).
        image_tokens: `self.image_tokens(image)`, when already computed.
        Returns x̂0 [B, V, H, W, 3].
        """
        cfg = self.cfg
        if image.dim() == 4:
            image = image[:, None]
        B, T, _, H, W = image.shape
        L, p = cfg.num_layers, cfg.patch_size
        rows, cols = H // p, W // p
        if x_t.shape[1] != T * L or x_t.shape[2:] != (H, W, 3):
            raise ValueError(f"x_t {tuple(x_t.shape)} does not match {T} frame(s) × {L} layers of {H}×{W} images")
        if image_tokens is None:
            image_tokens = self.image_tokens(image)  # [B, V, P, D/2]

        # Geometry tokens: [RGB patch ‖ noisy XYZ patch (‖ prior XYZ patch)].
        rgb = repeat(patchify(image.permute(0, 1, 3, 4, 2), p), "b t p c -> b (t l) p c", l=L)  # [B, V, P, p·p·3]
        patches = [rgb, patchify(x_t, p)]
        if cfg.silhouette_prior:
            if foreground is None:
                raise ValueError("this model starts from the silhouette: pass the foreground mask")
            inflated = self.inflated(foreground)  # [B, L, H, W, 3]
            patches.append(patchify(self.silhouette(foreground, inflated=inflated).to(x_t.dtype), p))
        geometry_tokens = self.geometry_proj(torch.cat(patches, dim=-1))  # [B, V, P, D/2]
        x = torch.cat([image_tokens, geometry_tokens], dim=-1)  # [B, V, P, D]

        # Conditioning: per-layer AdaLN for frame blocks, mean-time AdaLN for the others.
        t = t.float()
        t_layer = t[:, None].expand(B, L) if t.dim() == 1 else t  # [B, L]
        ada_layer = self.time_embed(t_layer)  # [B, L, 6, D]
        ada_mean = ada_layer[:, 0] if t.dim() == 1 else self.time_embed(t.mean(dim=1))  # [B, 6, D]
        ada_frame = ada_layer
        if cfg.layer_conditioning == "film_adaln":
            ada_frame = ada_layer + self.layer_adaln(self.film.layer_embed.weight).unflatten(
                -1, (6, -1)
            )  # [B, L, 6, D]
        ropes = self.ropes(rows, cols, T, x.device)
        x = run_stack(
            self.blocks, self.film(), x, ada_frame, ada_mean, ropes, T, self.temporal_blocks if cfg.temporal else None
        )
        out = unpatchify(self.head(x, ada_layer, ada_mean, ropes, T).float(), p, rows)  # [B, V, H, W, 3]
        if cfg.silhouette_prior:
            placement = self.prior_placement(x.mean(dim=(1, 2))).float()  # [B, 4]
            out = out + self.silhouette(cast(torch.Tensor, foreground), placement, inflated)
        if cfg.refine_width:
            mask = foreground if foreground is not None else image.new_ones(B, H, W, dtype=torch.bool)
            out = self.refine(out, x_t.float(), image.float(), mask)
        return out


# ----------------------------------------------------------------------------------------------
# Named configurations
# ----------------------------------------------------------------------------------------------


def _released(depth: int, image_size: int, layer_conditioning: str, temporal: bool = False) -> WTDiTConfig:
    return WTDiTConfig(
        image_size=image_size,
        patch_size=14,
        num_layers=6,
        dim=1536,
        num_heads=24,
        depth=depth,
        head_depth=6,
        layer_conditioning=layer_conditioning,
        temporal=temporal,
        encoder=EncoderConfig(embed_dim=1024, depth=24, num_heads=16, pos_grid=37, frozen=True),
    )


CONFIGS = {
    # Ours, trained from scratch with a small ViT encoder.
    "tiny": lambda: WTDiTConfig(
        image_size=128,
        patch_size=16,
        num_layers=4,
        dim=192,
        num_heads=4,
        depth=6,
        head_depth=3,
        layerscale_init=0.1,
        encoder=EncoderConfig(embed_dim=192, depth=4, num_heads=4, pos_grid=8, frozen=False),
    ),
    "small": lambda: WTDiTConfig(
        image_size=224,
        patch_size=14,
        num_layers=6,
        dim=512,
        num_heads=8,
        depth=12,
        head_depth=3,
        layerscale_init=0.1,
        encoder=EncoderConfig(embed_dim=384, depth=8, num_heads=6, pos_grid=16, frozen=False),
    ),
    # The released models (interop/SPEC.md): object, scene and dynamic.
    "r75b": lambda: _released(42, 504, "film"),
    "r69l": lambda: _released(36, 840, "film_adaln"),
    "r76": lambda: _released(42, 336, "film", temporal=True),
}


def build_config(name: str, **overrides) -> WTDiTConfig:
    """A named configuration with field overrides, e.g. build_config("tiny", num_layers=6)."""
    if name not in CONFIGS:
        raise ValueError(f"unknown config {name!r}; choose from {', '.join(CONFIGS)}")
    cfg = CONFIGS[name]()
    return WTDiTConfig(**{**cfg.to_dict(), **overrides})
