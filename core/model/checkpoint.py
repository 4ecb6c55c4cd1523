"""Our checkpoints: .safetensors whose metadata carries everything needed to rebuild the model.

Metadata keys: `format` ("world-tracing"), `config` (WTDiTConfig JSON), `normalization`
(PointNormalization JSON), `info` (free JSON: training command, step, data). Weights are only
ever read with safetensors: nothing is unpickled.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save

from ..atomic import write_atomic
from ..geometry.points import PointNormalization
from .wtdit import WTDiT, WTDiTConfig

FORMAT = "world-tracing"


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, or does not fit the model it claims to be."""


def save_checkpoint(
    path: str | os.PathLike,
    state: dict[str, torch.Tensor],
    config: WTDiTConfig,
    normalization: PointNormalization,
    info: dict | None = None,
) -> None:
    """Write model weights with their config and normalisation (atomically: temp file, then rename)."""
    meta = {
        "format": FORMAT,
        "config": json.dumps(config.to_dict()),
        "normalization": normalization.to_json(),
        "info": json.dumps(info or {}),
    }
    data = save({k: v.detach().contiguous().cpu() for k, v in state.items()}, metadata=meta)
    write_atomic(path, lambda f: f.write(data))


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of a .safetensors file; CheckpointError if it is missing or not safetensors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable .safetensors file ({e})") from None


def ours_metadata(path: str | os.PathLike) -> dict[str, str] | None:
    """The metadata of one of our checkpoints, or None for any other file (e.g. a released model.pt);
    CheckpointError when the file is missing or a .safetensors file that cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix != ".safetensors":
        return None
    meta = read_metadata(path)
    return meta if meta.get("format") == FORMAT else None


def read_header(
    path: str | os.PathLike, meta: dict[str, str] | None = None
) -> tuple[WTDiTConfig, PointNormalization, dict]:
    """(config, normalisation, info) from one of our checkpoints' metadata (`meta` if already read),
    with every tensor's shape checked against the config (no weights read). CheckpointError names
    the file and the reason."""
    meta = read_metadata(path) if meta is None else meta
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a World Tracing checkpoint (metadata format={meta.get('format')!r})")
    try:
        config = WTDiTConfig(**json.loads(meta["config"]))
        normalization = PointNormalization.from_json(meta["normalization"])
        info = json.loads(meta.get("info", "{}"))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: malformed metadata ({e})") from None
    with torch.device("meta"):
        model = WTDiT(config)
    with safe_open(str(path), framework="pt") as f:
        shapes = {k: torch.empty(f.get_slice(k).get_shape(), device="meta") for k in f.keys()}
    check_state_dict(model, shapes, str(path))
    return config, normalization, info


def load_checkpoint(
    path: str | os.PathLike, device: torch.device | str = "cpu", meta: dict[str, str] | None = None
) -> tuple[WTDiT, PointNormalization, dict]:
    """Rebuild the model of one of our checkpoints and load its weights strictly.

    Returns (model in eval mode, normalisation, info). Raises CheckpointError with the reason when
    the file is missing, is not ours, or its tensors do not match its config.
    """
    config, normalization, info = read_header(path, meta)
    with torch.device("meta"):
        model = WTDiT(config)
    with safe_open(str(path), framework="pt", device=str(device)) as f:
        # get_tensor maps the file: copy each tensor off it, so a file replaced in place later cannot crash us
        state = {k: f.get_tensor(k).clone() for k in f.keys()}
    model.load_state_dict(state, assign=True)
    return model.to(device).eval(), normalization, info


def check_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """CheckpointError naming the missing, unexpected and mis-shaped tensors, if any."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {expected[k]}"
        for k in expected
        if k in state and tuple(state[k].shape) != expected[k]
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
        if shapes:
            parts.append(f"{len(shapes)} with other shapes (e.g. {shapes[:3]})")
        raise CheckpointError(f"{source}: weights do not match the model config: " + "; ".join(parts))
