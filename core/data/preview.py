"""Contact sheets of ground-truth samples: RGB, alpha and per-layer depth."""

from __future__ import annotations

import os

import numpy as np

from ..plots import colorize, image_grid
from .shards import ShardReader


def preview_sheet(reader: ShardReader, path: str | os.PathLike, count: int = 8) -> None:
    """Write a PNG with one row per sample (the first `count`; for clips, one row per frame of the
    first samples): RGB, alpha, then depth of each layer.

    Depth colours share one range per row, so the layers of a sample compare directly.
    """
    rows, names = [], []
    shown = [(i, t) for i in range(len(reader)) for t in range(reader.frames)][:count]
    for i, t in shown:
        lpm = reader.layered(i, frame=t)
        z = lpm.points[..., 2]
        zmin, zmax = (float(z[lpm.valid].min()), float(z[lpm.valid].max())) if lpm.valid.any() else (0.0, 1.0)
        alpha = reader.alpha[i] if reader.frames == 1 else reader.alpha[i, t]
        rows.append([lpm.image, np.repeat(alpha[..., None], 3, axis=-1)])
        rows[-1] += [colorize(z[k], lpm.valid[k], zmin, zmax) for k in range(lpm.num_layers)]
        names.append(f"#{int(reader.index[i])}" + (f" frame {t}" if reader.frames > 1 else ""))
    labels = ["rgb", "alpha"] + [f"layer {k}" for k in range(reader.num_layers)]
    image_grid(rows, labels, names).save(path)
