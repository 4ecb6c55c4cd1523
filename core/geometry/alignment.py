"""Aligning predicted points to reference points, by the unknowns solved for (numpy).

Used wherever a prediction (known up to scale and depth offset) is compared with ground truth:
the held-out metrics and their figures.
"""

from __future__ import annotations

import numpy as np


def align_points_scale_z_shift(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """Least-squares scale s (on xyz) and z-shift t minimising Σ‖s·p + t·e_z − g‖².

    pred, gt: (N, 3) corresponding points. Solves the 2×2 normal equations in float64
    (minimum-norm solution when they are singular). Returns (s, t).
    """
    p = np.asarray(pred, dtype=np.float64)
    g = np.asarray(gt, dtype=np.float64)
    a = np.array([[np.sum(p * p), np.sum(p[:, 2])], [np.sum(p[:, 2]), len(p)]])
    b = np.array([np.sum(p * g), np.sum(g[:, 2])])
    (s, t), *_ = np.linalg.lstsq(a, b, rcond=None)
    return float(s), float(t)


def apply_scale_z_shift(points: np.ndarray, scale: float, shift: float) -> np.ndarray:
    """s·p + t·e_z for points (..., 3); returns a new (..., 3) array."""
    out = scale * np.asarray(points)
    out[..., 2] += shift
    return out
