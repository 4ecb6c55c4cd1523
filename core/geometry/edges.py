"""The edge filter: drop "flying pixels", points that float between the two surfaces of a depth edge.

A pixel straddling an occlusion edge gets a depth between the near and the far surface (a network
regressing the mean, or any interpolation), so its point hangs in the air between them. Meshes are
already cut there (`layer_to_grid_mesh`); this takes such points out of the valid set itself.

The rule, per layer: look at the pixel's opposite 8-neighbours in pairs along four lines (left–right,
up–down and both diagonals). The pixel is flying when, on some line, both neighbours are valid and it
lies between their depths, on one surface with neither of them: farther than the nearer neighbour and
nearer than the farther one, each by more than the mesh cut's depth-jump test allows (`on_one_surface`,
relative gap far / near − 1 > BASE_REL_JUMP / strength). A pixel on a clean edge agrees with its
neighbour on its own side, so both sides of a clean edge survive; a thin structure (nearer or farther
than both neighbours) is not between them and survives too. Only the boundary's ramp goes.

A "neighbour" is the first pixel along the line whose depth differs from the pixel's own (up to REACH
steps, never across an invalid pixel): in a map upsampled by nearest neighbour one source pixel is a
block of equal depths, and a flying block is judged by the blocks beside it. Traces are filtered at
the model's resolution, before they are upsampled (`core.inference.trace_image`).
"""

from __future__ import annotations

import numpy as np

from .meshing import on_one_surface

#: Relative depth gap (far / near − 1) to both neighbours on a line that makes a pixel flying at strength 1.
BASE_REL_JUMP = 0.05
DEFAULT_STRENGTH = 1.0
#: (row, column) steps to one neighbour of each opposite pair: left–right, up–down, and both diagonals.
LINES = ((0, 1), (1, 0), (1, 1), (1, -1))
#: Longest run of equal depths taken as one sample: a map upsampled by nearest neighbour up to this factor.
REACH = 16


def edge_threshold(strength: float) -> float:
    """Relative depth gap at which the filter of `strength` (> 0) parts surfaces: BASE_REL_JUMP / strength."""
    return BASE_REL_JUMP / strength


def neighbour_across_run(
    depth: np.ndarray, valid: np.ndarray, dr: int, dc: int, reach: int = REACH
) -> tuple[np.ndarray, np.ndarray]:
    """Each pixel's neighbour along (dr, dc): the first of the next `reach` pixels whose depth differs from its
    own, provided every pixel up to it is valid. depth: (..., H, W); valid: (..., H, W) bool.

    Returns its depth (..., H, W) and whether there is one (..., H, W) bool.
    """
    H, W = depth.shape[-2:]
    widths = [(0, 0)] * (depth.ndim - 2) + [(reach, reach), (reach, reach)]
    depth_pad, valid_pad = np.pad(depth, widths), np.pad(valid, widths)  # beyond the border: invalid
    found = np.zeros_like(valid)
    z = np.zeros_like(depth)
    walking = valid.copy()  # every pixel so far valid and of equal depth
    for k in range(1, reach + 1):
        rows, cols = slice(reach + k * dr, reach + k * dr + H), slice(reach + k * dc, reach + k * dc + W)
        zk, vk = depth_pad[..., rows, cols], valid_pad[..., rows, cols]
        same = zk == depth
        differs = walking & vk & ~same
        np.copyto(z, zk, where=differs)
        found |= differs
        walking &= vk & same
        if not walking.any():
            break
    return z, found


def flying_pixels(depth: np.ndarray, valid: np.ndarray, max_rel_jump: float) -> np.ndarray:
    """Valid pixels that lie between two surfaces (see the module docstring), per (..., H, W) image.

    depth: (..., H, W) camera-space z; valid: (..., H, W) bool. Returns (..., H, W) bool.
    """
    flying = np.zeros_like(valid)
    for dr, dc in LINES:
        za, found_a = neighbour_across_run(depth, valid, -dr, -dc)
        zb, found_b = neighbour_across_run(depth, valid, dr, dc)
        near, far = np.minimum(za, zb), np.maximum(za, zb)
        # beyond the nearer neighbour's surface and short of the farther one's: strictly between them
        apart = ~on_one_surface(near, depth, max_rel_jump) & ~on_one_surface(depth, far, max_rel_jump)
        flying |= found_a & found_b & apart
    return flying


def edge_filter(points: np.ndarray, valid: np.ndarray, strength: float = DEFAULT_STRENGTH) -> np.ndarray:
    """The valid set without flying pixels: `valid` less `flying_pixels` at threshold `edge_threshold(strength)`.

    points: (..., L, H, W, 3) camera space (OpenCV, z forward); valid: (..., L, H, W) bool. Each layer is
    tested on its own; a pixel dropped in layer k is dropped in the layers behind it too, so layers stay
    filled front to back. strength 0 is off (`valid` comes back as it is), 1 the default, larger is stricter
    (a smaller gap counts). Returns (..., L, H, W) bool.
    """
    if strength < 0:
        raise ValueError(f"edge filter strength must be at least 0, got {strength}")
    if strength == 0:
        return valid
    kept = valid & ~flying_pixels(points[..., 2], valid, edge_threshold(strength))
    return np.logical_and.accumulate(kept, axis=-3)
