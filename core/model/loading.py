"""Any WT-DiT checkpoint — one of ours (.safetensors carrying its config) or an officially released
file — as a model and its card, reading the file once.

The card says what the model is (name, release, mode, resolution, layers, cost) without running it;
`describe_model` makes the same card from tensor shapes alone, for the panel's Check Model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from ..geometry.points import PointNormalization
from ..sampling import SampleConfig
from .checkpoint import load_checkpoint, ours_metadata, read_header
from .cost import count_flops, count_parameters
from .official import load_official, read_release, release_config, release_frame_correlation, release_normalization
from .wtdit import WTDiT, WTDiTConfig

DEFAULT_ANCHOR = 0.15  # our models restart the visible layer from their placed anchor here (core/sampling.py)


@dataclass(frozen=True)
class ModelCard:
    """What a checkpoint holds, known without running it."""

    name: str  # ours: from the file's info or its stem; official: "official <release>"
    release: str  # "ours", an official release ("r75b", "r69l", "r76") or "custom" (official layout, other shape)
    mode: str  # "object", "scene" or "dynamic"
    image_size: int  # the model's square input side in pixels
    layers: int  # L geometry layers
    parameters: int
    config: WTDiTConfig = field(repr=False, compare=False)
    scene_framing: str | None  # how scene mode frames an image (None: letterbox; the releases "stretch" it)
    frame_correlation: float  # ρ of the initial noise across frames its sampler draws (0: independent)
    fill_correlation: float  # ρ across frames of the noise its sampler puts at invalid pixels
    anchor: float | None  # time its sampler restarts the visible layer from the silhouette (None: never)
    info: dict = field(default_factory=dict)  # ours: the file's info metadata (e.g. the training record)

    @cached_property
    def forward_flops(self) -> int:
        """FLOPs of one forward of one sample, counted on the meta device when first asked for (counting
        imports torch's compiler: ~1.5 s that a trace does not need to wait for)."""
        return count_flops(self.config)["total"]

    def sample_config(self, **settings: Any) -> SampleConfig:
        """The sampler settings for this model: `settings` (steps, solver, anchor, ...) over its frame
        correlations and anchor."""
        own = {"frame_correlation": self.frame_correlation, "fill_correlation": self.fill_correlation}
        return SampleConfig(**{**own, "anchor": self.anchor, **settings})


def model_mode(cfg: WTDiTConfig, normalization: PointNormalization) -> str:
    """The one rule for a model's mode: temporal blocks → dynamic, log-median points → scene, else object."""
    if cfg.temporal:
        return "dynamic"
    return "scene" if normalization.mode == "log_median" else "object"


def make_card(
    cfg: WTDiTConfig, normalization: PointNormalization, name: str, release: str, info: dict | None = None
) -> ModelCard:
    """The card of a model; its sampler follows the release its weights come from (a converted
    official file names it in its info). Object-unit models trained here (object and dynamic), and
    scene models with a DepthNet, anchor the visible layer at the time their info names, else at
    DEFAULT_ANCHOR; the released models never do."""
    info = info or {}
    mode = model_mode(cfg, normalization)
    own = release == "ours" and "release" not in info  # trained here, not a converted release
    return ModelCard(
        name=name,
        release=release,
        mode=mode,
        image_size=cfg.image_size,
        layers=cfg.num_layers,
        parameters=count_parameters(cfg),
        config=cfg,
        scene_framing=None if release == "ours" else "stretch",
        frame_correlation=info.get("frame_correlation", release_frame_correlation(info.get("release", release), cfg)),
        fill_correlation=info.get("frame_correlation", 0.0) if own else 0.0,
        anchor=info.get("anchor", DEFAULT_ANCHOR)
        if own and (normalization.mode == "zscore" or cfg.depth_width)
        else None,
        info=info,
    )


def load_model(
    path: str | os.PathLike, device: torch.device | str = "cpu"
) -> tuple[WTDiT, PointNormalization, ModelCard]:
    """(model in eval mode, normalisation, card) from our .safetensors or an officially released file.

    Ours are recognised by their metadata; anything else is read as a released state dict (weights
    only, never unpickled). Raises CheckpointError (a ValueError) naming the file and the reason.
    """
    path = Path(path)
    meta = ours_metadata(path)
    if meta is not None:
        model, normalization, info = load_checkpoint(path, device, meta)
        return model, normalization, make_card(model.cfg, normalization, info.get("name", path.stem), "ours", info)
    model, normalization, release = load_official(path, device)
    return model, normalization, make_card(model.cfg, normalization, f"official {release}", release)


def describe_model(path: str | os.PathLike) -> ModelCard:
    """The card of a checkpoint from its metadata and tensor shapes (no weights loaded), every shape
    checked against the config it implies."""
    path = Path(path)
    meta = ours_metadata(path)
    if meta is not None:
        cfg, normalization, info = read_header(path, meta)
        return make_card(cfg, normalization, info.get("name", path.stem), "ours", info)
    shapes = {k: torch.empty(v.shape, device="meta") for k, v in read_release(path).items()}
    cfg, release = release_config(shapes, path)
    return make_card(cfg, release_normalization(release, cfg), f"official {release}", release)
