"""What ships inside the extension: the trained models and the sample image."""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
SHIPPED_CHECKPOINTS = {
    "object": ASSETS / "wt-tiny.safetensors",
    "scene": ASSETS / "wt-tiny-scene.safetensors",
    "dynamic": ASSETS / "wt-tiny-dynamic.safetensors",
}
SHIPPED_CHECKPOINT = SHIPPED_CHECKPOINTS["object"]
SAMPLE_IMAGE = ASSETS / "sample.png"


def default_checkpoint(mode: str = "object") -> Path:
    """The checkpoint shipped for `mode` ("object", "scene" or "dynamic"); FileNotFoundError with a hint
    if it is absent."""
    path = SHIPPED_CHECKPOINTS[mode]
    if not path.is_file():
        raise FileNotFoundError(f"the shipped checkpoint {path} is missing; pass --checkpoint")
    return path
