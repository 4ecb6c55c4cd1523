"""Contact sheets of ground-truth samples: RGB, alpha and per-layer depth."""

from __future__ import annotations

import os

import numpy as np

from ..plots import colorize, image_grid
from .shards import ShardReader


def preview_sheet(reader: ShardReader, path: str | os.PathLike, count: int = 8) -> None:
    """Write a PNG with one row per sample (the first `count`): RGB, alpha, then depth of each layer.

    Depth colours share one range per row, so the layers of a sample compare directly.
    """
    rows = []
    for i in range(min(count, len(reader))):
        lpm = reader.layered(i)
        z = lpm.points[..., 2]
        zmin, zmax = (float(z[lpm.valid].min()), float(z[lpm.valid].max())) if lpm.valid.any() else (0.0, 1.0)
        alpha = np.repeat(reader.alpha[i][..., None], 3, axis=-1)
        rows.append([lpm.image, alpha] + [colorize(z[k], lpm.valid[k], zmin, zmax) for k in range(lpm.num_layers)])
    labels = ["rgb", "alpha"] + [f"layer {k}" for k in range(reader.num_layers)]
    image_grid(rows, labels, [f"#{int(reader.index[i])}" for i in range(len(rows))]).save(path)
