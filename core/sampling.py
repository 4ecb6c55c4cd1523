"""Sampling WT-DiT: the flow ODE from noise (t = 1) to geometry (t = 0), Euler or Heun.

The model is any callable (x_t [B, V, H, W, 3], t [B] or [B, V], image) → x̂0; the velocity is
v = (x_t - x̂0) / max(t, t_min) (DESIGN.md §4, SPEC §15). `sample_steps` is a generator that
yields after every step, so progress bars and cancel buttons hook in without touching the loop.

Anchoring (ours, object models): after the first step, the visible layer is restarted from a
given clean guess (the placed silhouette inflation, `core/inference.py`) noised to time `anchor`,
and stays there while the other layers come down from t = 1; from t = anchor on, all layers move
together. The hidden layers are then sampled around a visible surface that is already sound.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

Model = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class SampleConfig:
    steps: int = 20  # ODE steps from t = 1 to t = 0
    solver: str = "euler"  # "euler" or "heun" (second order, two model calls per step but the last)
    t_min: float = 0.05  # clamp of t in the velocity's denominator
    shift: float = 1.0  # time shift t' = s·t / (1 + (s - 1)·t); 1 = uniform grid
    frame_correlation: float = 0.0  # ρ of the initial noise across frames (a model's: ModelCard.sample_config)
    fill_correlation: float = 0.0  # ρ across frames of the noise at invalid pixels (ours; the releases draw it iid)
    anchor: float | None = None  # layer 0 restarts from its anchor at this time (module docstring); None: off

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.solver not in ("euler", "heun"):
            raise ValueError(f"solver must be 'euler' or 'heun', got {self.solver!r}")
        for name in ("frame_correlation", "fill_correlation"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.anchor is not None and not 0.0 <= self.anchor < 1.0:
            raise ValueError(f"anchor must be a time in [0, 1), got {self.anchor}")


DEFAULT_SAMPLING = SampleConfig()  # 20 Euler steps (the released sampler's default)


@dataclass
class SamplerStep:
    """State after `step` of `total` steps: current time, state x_t and the model's latest x̂0."""

    step: int
    total: int
    t: float
    x: torch.Tensor
    x0: torch.Tensor


def time_grid(steps: int, shift: float = 1.0) -> torch.Tensor:
    """[steps + 1] times from 1 to 0, uniform then shifted."""
    t = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    return (shift * t / (1 + (shift - 1) * t)).float()


Generators = torch.Generator | Sequence[torch.Generator] | None  # one for the batch, or one per sample


def initial_noise(
    batch: int,
    frames: int,
    layers: int,
    height: int,
    width: int,
    cfg: SampleConfig = DEFAULT_SAMPLING,
    generator: Generators = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """The sampler's N(0, 1) start x_T [B, V, H, W, 3] (V = frames·layers) drawn in the released models' order.

    Independent frames draw randn(B, 3, V, H, W); frames correlated by ρ = cfg.frame_correlation draw
    shared [B, 1, Q, 3] then independent [B, T, Q, 3] noise (Q = L·H·W) mixed as √ρ·shared + √(1-ρ)·indep
    (SPEC §16.3). With one generator per sample, sample k is what a batch of one would draw from generator k.
    """
    if isinstance(generator, Sequence):
        return torch.cat([initial_noise(1, frames, layers, height, width, cfg, g, device) for g in generator])
    V = frames * layers
    correlation = cfg.frame_correlation
    if correlation == 0.0 or frames == 1:
        noise = torch.randn(batch, 3, V, height, width, generator=generator, device=device)
        return noise.permute(0, 2, 3, 4, 1)  # [B, V, H, W, 3]
    q = layers * height * width
    shared = torch.randn(batch, 1, q, 3, generator=generator, device=device)
    indep = torch.randn(batch, frames, q, 3, generator=generator, device=device)
    noise = correlation**0.5 * shared + (1 - correlation) ** 0.5 * indep
    return noise.reshape(batch, V, height, width, 3)


def fill_noise(
    like: torch.Tensor, generator: Generators = None, frames: int = 1, correlation: float = 0.0
) -> torch.Tensor:
    """Fresh N(0, 1) noise shaped like the state [B, V, H, W, 3], drawn channel-major as the
    released sampler does (so seeded CPU runs reproduce its samples); with `correlation` ρ > 0 over
    `frames` frames (V = frames·L, ours), one frame's draw shared by all mixed in as
    √ρ·shared + √(1−ρ)·own, both drawn in plain order (a strided draw costs several times more)."""
    if isinstance(generator, Sequence):
        return torch.cat([fill_noise(like[k : k + 1], g, frames, correlation) for k, g in enumerate(generator)])
    if correlation == 0.0 or frames == 1:
        n = torch.empty(like.shape[0], 3, like[0, ..., 0].numel(), device=like.device, dtype=like.dtype)
        return n.transpose(1, 2).normal_(generator=generator).reshape(like.shape)
    frame = like[:, : like.shape[1] // frames]
    shared = torch.randn(frame.shape, generator=generator, device=like.device, dtype=like.dtype).repeat(
        1, frames, 1, 1, 1
    )
    if correlation == 1.0:
        return shared
    own = torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)
    return correlation**0.5 * shared + (1 - correlation) ** 0.5 * own


def sample_steps(
    model: Model,
    image: torch.Tensor,
    noise: torch.Tensor,
    cfg: SampleConfig = DEFAULT_SAMPLING,
    valid: torch.Tensor | None = None,
    generator: Generators = None,
    fill_draws: Sequence[torch.Tensor] | None = None,
    anchor: Callable[[torch.Tensor], torch.Tensor] | None = None,
    frames: int = 1,
) -> Iterator[SamplerStep]:
    """Integrate the flow ODE, yielding after every step.

    image: as the model takes it; noise: [B, V, H, W, 3] initial state at t = 1.
    valid: optional [B, V, H, W] bool; at invalid pixels every model call sees fresh noise instead
    of the state (drawn with `generator`, correlated across the state's `frames` frames by
    cfg.fill_correlation, or taken in order from `fill_draws`).
    anchor: with cfg.anchor set, maps the first step's x̂0 [B, V, H, W, 3] to the clean guess of
    view 0 [B, H, W, 3] that the visible layer restarts from (module docstring); for a clip of T
    frames, the guesses of every frame's visible layer [B, T, H, W, 3] (views 0, L, 2L, ...).
    """
    grid = time_grid(cfg.steps, cfg.shift)
    x = noise
    calls = 0
    t0 = cfg.anchor if anchor is not None else None
    anchored = False  # the visible layers restarted from their anchor: their time is min(t, t0) from then on
    layers = x.shape[1] // frames  # L: views per frame

    def times(t: float) -> torch.Tensor:
        """Per-view times [V] at grid time t."""
        tv = torch.full((x.shape[1],), t, dtype=torch.float32)
        if anchored and t0 is not None:
            tv[::layers] = min(t, t0)
        return tv.to(x.device)

    def velocity(state: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
        nonlocal calls
        x_in = state
        if valid is not None:
            fill = (
                fill_draws[calls]
                if fill_draws is not None
                else fill_noise(state, generator, frames, cfg.fill_correlation)
            )
            x_in = torch.where(valid[..., None], state, fill.to(state))
        calls += 1
        tv = times(t)
        tt = tv[:layers].expand(state.shape[0], -1) if anchored else tv[:1].expand(state.shape[0])  # [B, L] or [B]
        x0 = model(x_in, tt, image).to(state.dtype)
        return (state - x0) / tv.clamp_min(cfg.t_min).to(state.dtype)[:, None, None, None], x0

    for i in range(cfg.steps):
        t, t_next = float(grid[i]), float(grid[i + 1])
        dt = (times(t) - times(t_next)).to(x.dtype)[:, None, None, None]  # [V, 1, 1, 1]
        v, x0 = velocity(x, t)
        x_next = x - dt * v
        if cfg.solver == "heun" and t_next > 0:
            v2, _ = velocity(x_next, t_next)
            x_next = x - dt * 0.5 * (v + v2)
        if anchor is not None and t0 is not None and not anchored:
            guess = anchor(x0).to(x.dtype)  # [B, H, W, 3], or [B, T, H, W, 3] for a clip
            guess = guess[:, None] if guess.dim() == 4 else guess
            x_next = x_next.clone()
            x_next[:, ::layers] = (1 - t0) * guess + t0 * noise[:, ::layers]
            anchored = True
        x = x_next
        yield SamplerStep(i + 1, cfg.steps, t_next, x, x0)
