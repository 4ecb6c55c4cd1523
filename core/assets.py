"""What ships inside the extension: the trained model and the sample image."""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
SHIPPED_CHECKPOINT = ASSETS / "wt-tiny.safetensors"
SAMPLE_IMAGE = ASSETS / "sample.png"


def default_checkpoint() -> Path:
    """The checkpoint shipped with the extension (FileNotFoundError with a hint if it is absent)."""
    if not SHIPPED_CHECKPOINT.is_file():
        raise FileNotFoundError(f"the shipped checkpoint {SHIPPED_CHECKPOINT} is missing; pass --checkpoint")
    return SHIPPED_CHECKPOINT
