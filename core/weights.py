"""Where the shipped checkpoint and sample image live inside the extension."""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
SHIPPED_CHECKPOINT = ASSETS / "wt-tiny.safetensors"
SAMPLE_IMAGE = ASSETS / "sample.png"


def load_any_checkpoint(path: str | Path, device) -> tuple:
    """(model, normalisation, info) from our .safetensors or an officially released checkpoint.

    Ours are recognised by their metadata; anything else is read as a released state dict
    (weights only). info["name"] names the model, info["mode"] is "object" or "scene".
    """
    from .checkpoint import FORMAT, load_checkpoint, read_metadata
    from .official import load_official

    path = Path(path)
    if path.suffix == ".safetensors" and read_metadata(path).get("format") == FORMAT:
        model, normalization, info = load_checkpoint(path, device)
        mode = "scene" if normalization.mode == "log_median" else "object"
        return model, normalization, {"name": path.stem, "mode": mode, **info}
    return load_official(path, device)


def default_checkpoint() -> Path:
    """The checkpoint shipped with the extension (FileNotFoundError with a hint if it is absent)."""
    if not SHIPPED_CHECKPOINT.is_file():
        raise FileNotFoundError(f"the shipped checkpoint {SHIPPED_CHECKPOINT} is missing; pass --checkpoint")
    return SHIPPED_CHECKPOINT


def describe_checkpoint(path: str | Path) -> dict:
    """What a checkpoint holds, without loading its weights: name, mode, image_size, layers,
    parameters and forward FLOPs (our files: from the metadata; official ones: from tensor shapes)."""
    from .checkpoint import FORMAT, read_header, read_metadata
    from .profile import count_flops, count_parameters

    path = Path(path)
    if path.suffix == ".safetensors" and read_metadata(path).get("format") == FORMAT:
        cfg, normalization, info = read_header(path)
        mode = "scene" if normalization.mode == "log_median" else "object"
        name = info.get("name", path.stem)
    else:
        import torch

        from .official import RELEASES, checked_config, official_to_ours, read_official_file

        shapes = {k: torch.empty(v.shape, device="meta") for k, v in read_official_file(path).items()}
        cfg, release = checked_config(official_to_ours(shapes), path)
        mode = "dynamic" if cfg.temporal else ("scene" if RELEASES.get(release) == "log_median" or cfg.layer_conditioning == "film_adaln" else "object")
        name = f"official {release}"
    return {"name": name, "mode": mode, "image_size": cfg.image_size, "layers": cfg.num_layers,
            "parameters": count_parameters(cfg), "forward_flops": count_flops(cfg)["total"]}
