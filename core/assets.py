"""What ships inside the extension: the trained models and the sample image."""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
SHIPPED_CHECKPOINTS = {
    "object": ASSETS / "wt-tiny.safetensors",
    "scene": ASSETS / "wt-tiny-scene.safetensors",
}
SHIPPED_CHECKPOINT = SHIPPED_CHECKPOINTS["object"]
SAMPLE_IMAGE = ASSETS / "sample.png"


def default_checkpoint(mode: str = "object") -> Path:
    """The checkpoint shipped for `mode` ("object", "scene"; "dynamic" clips use the object model
    frame by frame until a dynamic model ships); FileNotFoundError with a hint if it is absent."""
    path = SHIPPED_CHECKPOINTS.get(mode, SHIPPED_CHECKPOINT)
    if not path.is_file():
        raise FileNotFoundError(f"the shipped checkpoint {path} is missing; pass --checkpoint")
    return path
