"""The officially released World Tracing checkpoints (r75b object, r69l scene, r76 dynamic) in WT-DiT.

Facts from interop/SPEC.md: released files are `model.pt` pickles holding a state dict or
{"model_state_dict", "ema_state_dict"} (EMA preferred), maybe with a `_orig_mod.` prefix. We read
them only with `torch.load(weights_only=True)` (no arbitrary objects), map their keys onto our
module names, check every tensor, and assign them into a model built on the meta device, so a
1.7B-parameter model is never held twice. The released head outputs -x̂0; ours predicts x̂0, so
its output layer is negated on the way in (and out, when writing an official layout).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from ..geometry.points import PointNormalization
from .checkpoint import CheckpointError, check_state_dict, save_checkpoint
from .encoder import EncoderConfig
from .wtdit import CONFIGS, WTDiT, WTDiTConfig

# (official pattern, our replacement), applied in order; the last rule renames every block's norm3.
KEY_RULES = [
    (r"^net\.time_embedding\.(\d)\.", r"time_embed.embed.\1."),
    (r"^net\.time_projection\.1\.", "time_embed.modulation.1."),
    (r"^net\.feature_projection\.0\.", "image_proj."),
    (r"^net\.geo_noise_projection\.0\.", "geometry_proj."),
    (r"^net\.encoder\.", "encoder."),
    (r"^layer_embed\.", "film.layer_embed."),
    (r"^layer_film_proj\.", "film.proj."),
    (r"^layer_adaln_proj\.", "layer_adaln."),
    (r"^net\.decoder_blocks\.", "blocks."),
    (r"^temporal_blocks\.(\d+)\.block\.", r"temporal_blocks.\1."),
    (r"^net\.latents_projection\.geo_blocks\.", "head.blocks."),
    (r"^net\.latents_projection\.geo_layer_embed\.", "head.film.layer_embed."),
    (r"^net\.latents_projection\.geo_film_proj\.", "head.film.proj."),
    (r"^net\.latents_projection\.geo_proj\.", "head.out."),
    (r"\.norm3\.", ".norm2."),
]
# Our names back to official ones (encoder and norm2 need care: the ViT's own norm2 keeps its name).
INVERSE_RULES = [
    (r"^time_embed\.embed\.(\d)\.", r"net.time_embedding.\1."),
    (r"^time_embed\.modulation\.1\.", "net.time_projection.1."),
    (r"^image_proj\.", "net.feature_projection.0."),
    (r"^geometry_proj\.", "net.geo_noise_projection.0."),
    (r"^encoder\.", "net.encoder."),
    (r"^film\.layer_embed\.", "layer_embed."),
    (r"^film\.proj\.", "layer_film_proj."),
    (r"^layer_adaln\.", "layer_adaln_proj."),
    (r"^blocks\.(\d+)\.norm2\.", r"net.decoder_blocks.\1.norm3."),
    (r"^blocks\.", "net.decoder_blocks."),
    (r"^temporal_blocks\.(\d+)\.norm2\.", r"temporal_blocks.\1.block.norm3."),
    (r"^temporal_blocks\.(\d+)\.", r"temporal_blocks.\1.block."),
    (r"^head\.blocks\.(\d+)\.norm2\.", r"net.latents_projection.geo_blocks.\1.norm3."),
    (r"^head\.blocks\.", "net.latents_projection.geo_blocks."),
    (r"^head\.film\.layer_embed\.", "net.latents_projection.geo_layer_embed."),
    (r"^head\.film\.proj\.", "net.latents_projection.geo_film_proj."),
    (r"^head\.out\.", "net.latents_projection.geo_proj."),
]
IGNORED = {"net.encoder.mask_token"}  # stored but never used in inference
NEGATED = ("head.out.weight", "head.out.bias")  # released head predicts -x̂0
RELEASES = {"r75b": "zscore", "r69l": "log_median", "r76": "zscore"}  # normalisation of each release
FRAME_CORRELATION = {"r76": 0.5}  # ρ of a release's initial noise across frames (SPEC §16.3); others: iid


def _rename(key: str, rules: list[tuple[str, str]], first_only: bool) -> str:
    for pattern, replacement in rules:
        key, n = re.subn(pattern, replacement, key)
        if n and first_only:
            break
    return key


def official_to_ours(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official keys → our keys (unknown extras kept under their own names, ignored keys dropped)."""
    out = {}
    for key, value in state.items():
        if key in IGNORED:
            continue
        ours = _rename(key, KEY_RULES, first_only=False)
        out[ours] = -value if ours in NEGATED else value
    return out


def ours_to_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our keys → the released layout (the inverse of `official_to_ours`)."""
    return {_rename(k, INVERSE_RULES, first_only=True): (-v if k in NEGATED else v) for k, v in state.items()}


def read_official_file(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict inside a released `model.pt` (EMA preferred), prefixes stripped.

    .pt/.pth files go through torch.load(weights_only=True, mmap=True), so files that need arbitrary
    objects are refused; a state dict saved as .safetensors is read with safetensors.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    data: Any  # a state dict, a dict holding some, or anything else a file may hold
    try:
        if path.suffix == ".safetensors":
            data = load_file(str(path))
        else:
            data = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # weights_only refusals, zip errors, truncated files
        raise CheckpointError(
            f"{path}: cannot be read as a weights-only checkpoint ({str(e).splitlines()[0]})"
        ) from None
    if isinstance(data, dict) and ("model_state_dict" in data or "ema_state_dict" in data):
        data = data.get("ema_state_dict") or data["model_state_dict"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"{path}: holds no state dict of tensors")
    if data and all(k.startswith("_orig_mod.") for k in data):
        data = {k[len("_orig_mod.") :]: v for k, v in data.items()}
    return {k.replace("._checkpoint_wrapped_module", ""): v for k, v in data.items()}


def infer_config(state: dict[str, torch.Tensor]) -> tuple[WTDiTConfig, str]:
    """Our config for an official state dict (our key names), and the release it matches ('custom' if none).

    Every size is read from tensor shapes; attention head counts from the per-head norms (decoder)
    and DINOv2's head width of 64 (encoder). The image size is the release's, or patch × the
    encoder's positional grid for other shapes.
    """

    def count(prefix: str) -> int:
        return len({k.split(".")[len(prefix.split("."))] for k in state if k.startswith(prefix + ".")})

    D = state["time_embed.embed.0.weight"].shape[0]
    patch = math.isqrt(state["head.out.weight"].shape[0] // 3)
    embed = state["encoder.cls_token"].shape[-1]
    encoder = EncoderConfig(
        embed_dim=embed,
        depth=count("encoder.blocks"),
        num_heads=max(1, embed // 64),
        pos_grid=math.isqrt(state["encoder.pos_embed"].shape[1] - 1),
        num_features=state["encoder.final_project.weight"].shape[1] // embed,
        frozen=True,
    )
    cfg = WTDiTConfig(
        image_size=patch * encoder.pos_grid,
        patch_size=patch,
        num_layers=state["film.layer_embed.weight"].shape[0],
        dim=D,
        num_heads=D // state["blocks.0.attn.q_norm.weight"].shape[0],
        depth=count("blocks"),
        head_depth=count("head.blocks"),
        layer_conditioning="film_adaln" if "layer_adaln.1.weight" in state else "film",
        temporal=count("temporal_blocks") > 0,
        encoder=encoder,
    )
    for name in RELEASES:
        release = CONFIGS[name]()
        if WTDiTConfig(**{**cfg.to_dict(), "image_size": release.image_size}) == release:
            return release, name
    return cfg, "custom"


def release_normalization(release: str, cfg: WTDiTConfig) -> PointNormalization:
    """How a release's points are normalised (a custom shape: log-median with per-layer AdaLN, as r69l)."""
    return PointNormalization(
        RELEASES.get(release, "log_median" if cfg.layer_conditioning == "film_adaln" else "zscore")
    )


def release_frame_correlation(release: str, cfg: WTDiTConfig) -> float:
    """ρ of the initial noise across frames the release's sampler draws (a custom shape with temporal
    blocks is sampled as r76; anything else, ours included, with independent frames)."""
    if release == "custom" and cfg.temporal:
        release = "r76"
    return FRAME_CORRELATION.get(release, 0.0)


def read_release(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a released file under our key names (see `read_official_file`)."""
    return official_to_ours(read_official_file(path))


def release_config(state: dict[str, torch.Tensor], path: str | Path) -> tuple[WTDiTConfig, str]:
    """`infer_config` for the tensors (our key names, real or meta) of the file `path`, with every
    tensor's shape checked against the config; CheckpointError naming the file otherwise."""
    try:
        cfg, name = infer_config(state)
    except KeyError as e:
        raise CheckpointError(f"{path}: not a World Tracing checkpoint (no tensor {e})") from None
    except (ValueError, ZeroDivisionError, IndexError) as e:  # zero-size or mis-shaped tensors
        raise CheckpointError(f"{path}: its tensors do not describe a valid model ({e})") from None
    with torch.device("meta"):
        model = WTDiT(cfg)
    check_state_dict(model, {k: v for k, v in state.items() if k in model.state_dict()}, str(path))
    return cfg, name


def load_official(
    path: str | Path,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    config: WTDiTConfig | None = None,
) -> tuple[WTDiT, PointNormalization, str]:
    """A released checkpoint as (model in eval mode, normalisation, release name or "custom").

    Every tensor the model needs must be present with its shape (CheckpointError names the rest);
    unknown extra tensors are ignored. `config` overrides the config read from the shapes.
    """
    state = read_release(path)
    inferred, release = release_config(state, path)
    cfg = config or inferred
    with torch.device("meta"):
        model = WTDiT(cfg)
    expected = model.state_dict()
    state = {k: v for k, v in state.items() if k in expected}
    check_state_dict(model, state, str(path))
    # copy=True: the file is memory-mapped; the model must not depend on it staying as it is
    state = {
        k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype, copy=True) for k, v in state.items()
    }
    model.load_state_dict(state, assign=True)
    return model.eval(), release_normalization(release, cfg), release


def convert_official(src: str | Path, dst: str | Path, dtype: torch.dtype = torch.bfloat16) -> str:
    """Write a released checkpoint as one of our .safetensors files (config and normalisation inside);
    returns the release."""
    model, normalization, release = load_official(src, "cpu", dtype)
    save_checkpoint(
        dst,
        model.state_dict(),
        model.cfg,
        normalization,
        {"name": f"official {release}", "release": release, "source": Path(src).name},
    )
    return release
