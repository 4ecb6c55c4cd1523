"""Pure torch functions on layered point maps: rays, forward fill, coordinate normalisation.

Axes: L layers, H×W pixels; every function accepts any leading dimensions `...`.
Points are OpenCV camera space (x right, y down, z forward); pixel centres sit at (col+0.5, row+0.5).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import torch

#: z-score statistics of the released object model (DESIGN.md §3, interop SPEC §17).
OBJECT_MEAN = (-0.002366, -0.004008, 1.904278)
OBJECT_STD = (0.280865, 0.315927, 0.706423)


def pixel_rays(intrinsics: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Camera rays through pixel centres, scaled to z = 1.

    intrinsics: [..., 3, 3] pinhole matrices in pixels.
    Returns [..., H, W, 3] with (x/z, y/z, 1).
    """
    dtype = intrinsics.dtype if intrinsics.is_floating_point() else torch.float32
    v, u = torch.meshgrid(
        torch.arange(height, dtype=dtype, device=intrinsics.device) + 0.5,
        torch.arange(width, dtype=dtype, device=intrinsics.device) + 0.5,
        indexing="ij",
    )  # [H, W]
    k = intrinsics[..., None, None, :, :].to(dtype)  # [..., 1, 1, 3, 3]
    x = (u - k[..., 0, 2]) / k[..., 0, 0]
    y = (v - k[..., 1, 2]) / k[..., 1, 1]
    return torch.stack([x, y, torch.ones_like(x)], dim=-1)  # [..., H, W, 3]


def ray_distance_to_points(distance: torch.Tensor, rays: torch.Tensor) -> torch.Tensor:
    """Points at `distance` along unit-normalised `rays`.

    distance: [..., H, W]; rays: [..., H, W, 3] (any length, e.g. from `pixel_rays`). Returns [..., H, W, 3].
    """
    return distance[..., None] * rays / rays.norm(dim=-1, keepdim=True)


def forward_fill_layers(points: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Fill every invalid layer with the last valid point of its pixel (the model's form).

    points: [..., L, H, W, 3]; valid: [..., L, H, W] (front to back). Pixels with no valid
    layer at all stay zero. Returns a new [..., L, H, W, 3] tensor.
    """
    filled = torch.where(valid[..., None], points, torch.zeros_like(points))
    layers = list(filled.unbind(dim=-4))
    for k in range(1, len(layers)):
        layers[k] = torch.where(valid[..., k, :, :, None], layers[k], layers[k - 1])
    return torch.stack(layers, dim=-4)


def collapsed_layers_to_valid(points: torch.Tensor, foreground: torch.Tensor, rel_gap: float = 0.01) -> torch.Tensor:
    """Validity of forward-filled layers: a layer counts where it lies behind the previous one.

    points: [..., L, H, W, 3] forward-filled; foreground: [..., H, W] bool (layer 0's mask).
    Layer k is valid where layer k-1 is and z_k - z_{k-1} > rel_gap * z_{k-1}; once a ray
    collapses, every later layer of it is invalid. Returns [..., L, H, W] bool.
    """
    z = points[..., 2]  # [..., L, H, W]
    gap = z[..., 1:, :, :] - z[..., :-1, :, :]
    ahead = gap > rel_gap * z[..., :-1, :, :].abs()  # [..., L-1, H, W]
    valid = torch.cat([foreground[..., None, :, :], ahead], dim=-3).bool()
    return torch.cumprod(valid.to(torch.uint8), dim=-3).bool()


NORMALIZATIONS = ("zscore", "log_median")  # objects, scenes


@dataclass(frozen=True)
class PointNormalization:
    """How camera-space points map to the network's units, with an exact inverse.

    mode "zscore" (objects): x̃ = (x - mean) / std per axis, fixed statistics.
    mode "log_median" (scenes): with m the sample's median valid depth,
    z̃ = ln(z / m), x̃ = sign(x)·ln(1 + |x| / m), ỹ likewise.
    """

    mode: str = "zscore"
    mean: tuple[float, float, float] = OBJECT_MEAN
    std: tuple[float, float, float] = OBJECT_STD

    def __post_init__(self) -> None:
        if self.mode not in NORMALIZATIONS:
            raise ValueError(f"unknown normalisation mode {self.mode!r} (expected 'zscore' or 'log_median')")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> PointNormalization:
        d = json.loads(text)
        return cls(d["mode"], tuple(d["mean"]), tuple(d["std"]))

    def scale(self, points: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Per-sample scale m: median valid depth (log_median) or 1 (zscore).

        points: [B, ..., 3]; valid: [B, ...]. Returns [B].
        """
        if self.mode == "zscore":
            return torch.ones(points.shape[0], dtype=points.dtype, device=points.device)
        z = torch.where(valid, points[..., 2], torch.full_like(points[..., 2], float("nan")))
        m = z.flatten(1).nanmedian(dim=1).values
        return torch.nan_to_num(m, nan=1.0).clamp_min(1e-6)

    def normalize(self, points: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Camera-space points [B, ..., 3] → network units, given the per-sample scale [B]."""
        if self.mode == "zscore":
            return (points - points.new_tensor(self.mean)) / points.new_tensor(self.std)
        m = scale.reshape(-1, *[1] * (points.dim() - 1))
        xy = points[..., :2]
        z = points[..., 2:].clamp_min(1e-6)
        return torch.cat([xy.sign() * torch.log1p(xy.abs() / m), torch.log(z / m)], dim=-1)

    def denormalize(self, x: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """Network units [B, ..., 3] → camera space; `scale` [B] defaults to 1 (relative scale)."""
        if self.mode == "zscore":
            return x * x.new_tensor(self.std) + x.new_tensor(self.mean)
        m = 1.0 if scale is None else scale.reshape(-1, *[1] * (x.dim() - 1))
        xy = x[..., :2]
        return torch.cat([xy.sign() * torch.expm1(xy.abs()) * m, torch.exp(x[..., 2:]) * m], dim=-1)
