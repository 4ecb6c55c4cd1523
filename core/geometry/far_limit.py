"""The far limit (scenes): drop points beyond a multiple of the visible surface's median depth.

Sky and far background lie outside what a model trained on rooms and streets has seen; it places them at
arbitrary, often huge depths, which swamp a scene in Blender. Scene mode drops them by default.
"""

from __future__ import annotations

import numpy as np

DEFAULT_SCENE_FACTOR = 8.0  # scene mode's default: points beyond 8× the median visible depth go


def far_limit(points: np.ndarray, valid: np.ndarray, factor: float) -> np.ndarray:
    """`valid` less the points deeper than `factor` × the median depth of each map's valid layer 0.

    points: (..., L, H, W, 3) camera space (z forward); valid: (..., L, H, W) bool. A pixel dropped in
    layer k goes from the layers behind it too (layers stay filled front to back). factor 0 is off
    (`valid` comes back as it is). Returns (..., L, H, W) bool.
    """
    if factor < 0:
        raise ValueError(f"the far limit must be at least 0 (0: off), got {factor}")
    if factor == 0:
        return valid
    z = points[..., 2]
    flat_z, flat_valid = z.reshape(-1, *z.shape[-3:]), valid.reshape(-1, *valid.shape[-3:])
    limits = np.array(
        [np.median(m[0][v[0]]) * factor if v[0].any() else np.inf for m, v in zip(flat_z, flat_valid, strict=False)]
    )
    near = flat_z <= limits.reshape(-1, 1, 1, 1).astype(z.dtype)
    return np.logical_and.accumulate(flat_valid & near, axis=-3).reshape(valid.shape)
