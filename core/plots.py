"""Pictures without matplotlib (PIL + numpy only, so they work on any training box):
colour maps for depth, labelled image grids, line plots for training curves, and side views of
layered points coloured by layer."""

from __future__ import annotations

import math
import os

import numpy as np
from PIL import Image, ImageDraw

from .layered import LAYER_COLOURS

# Anchor colours of a perceptually ordered map (dark blue → teal → yellow), interpolated linearly.
_ANCHORS = np.array(
    [[48, 18, 59], [50, 101, 215], [27, 190, 205], [98, 252, 107], [225, 220, 55], [251, 128, 34], [180, 30, 5]],
    dtype=np.float32,
)


def colorize(
    values: np.ndarray, valid: np.ndarray | None = None, vmin: float | None = None, vmax: float | None = None
) -> np.ndarray:
    """Map (H, W) values to (H, W, 3) uint8 colours; invalid pixels are black.

    The range defaults to the valid values' 2nd–98th percentiles.
    """
    valid = np.isfinite(values) if valid is None else valid & np.isfinite(values)
    v = values[valid]
    if vmin is None:
        vmin = float(np.percentile(v, 2)) if v.size else 0.0
    if vmax is None:
        vmax = float(np.percentile(v, 98)) if v.size else 1.0
    x = np.clip((values - vmin) / max(vmax - vmin, 1e-12), 0, 1) * (len(_ANCHORS) - 1)
    i = np.clip(np.floor(np.nan_to_num(x)).astype(int), 0, len(_ANCHORS) - 2)
    f = (np.nan_to_num(x) - i)[..., None]
    rgb = _ANCHORS[i] * (1 - f) + _ANCHORS[i + 1] * f
    rgb[~valid] = 0
    return rgb.astype(np.uint8)


def image_grid(
    rows: list[list[np.ndarray]],
    column_labels: list[str] | None = None,
    row_labels: list[str] | None = None,
    tile: int | None = None,
    pad: int = 4,
) -> Image.Image:
    """Tiles (h, w, 3) uint8 arranged in rows, resized (nearest) to a common `tile` height, with labels."""
    tile = tile or max(t.shape[0] for row in rows for t in row)
    ncols = max(len(r) for r in rows)
    label_h = 14 if column_labels else 0
    label_w = 70 if row_labels else 0
    sheet = Image.new(
        "RGB", (label_w + ncols * (tile + pad) + pad, label_h + len(rows) * (tile + pad) + pad), (255, 255, 255)
    )
    draw = ImageDraw.Draw(sheet)
    for c, text in enumerate(column_labels or []):
        draw.text((label_w + pad + c * (tile + pad), 1), text, fill=(0, 0, 0))
    for r, row in enumerate(rows):
        y = label_h + pad + r * (tile + pad)
        if row_labels:
            draw.text((2, y + tile // 2 - 6), row_labels[r], fill=(0, 0, 0))
        for c, t in enumerate(row):
            im = Image.fromarray(t)
            w = max(1, round(t.shape[1] * tile / t.shape[0]))
            sheet.paste(
                im.resize((min(w, tile), tile), Image.Resampling.NEAREST), (label_w + pad + c * (tile + pad), y)
            )
    return sheet


def line_plot(
    series: dict[str, tuple[list[float], list[float]]],
    path: str | os.PathLike,
    title: str = "",
    log_y: bool = False,
    size: tuple[int, int] = (640, 400),
) -> None:
    """Write a PNG with one polyline per named (x, y) series, axes ticks and a legend."""
    W, H = size
    left, right, top, bottom = 60, 150, 24, 36
    img = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(img)
    pts = [
        (x, y)
        for xs, ys in series.values()
        for x, y in zip(xs, ys, strict=True)
        if math.isfinite(y) and (not log_y or y > 0)
    ]
    if pts:
        xs, ys = np.array(pts, dtype=np.float64).T
        ty = np.log10(ys) if log_y else ys
        x0, x1 = xs.min(), max(xs.max(), xs.min() + 1e-9)
        y0, y1 = ty.min(), max(ty.max(), ty.min() + 1e-9)

        def to_px(x: float, y: float) -> tuple[float, float]:
            y = math.log10(y) if log_y else y
            return left + (x - x0) / (x1 - x0) * (W - left - right), H - bottom - (y - y0) / (y1 - y0) * (
                H - top - bottom
            )

        draw.rectangle([left, top, W - right, H - bottom], outline=(0, 0, 0))
        for k in range(5):
            fy = y0 + (y1 - y0) * k / 4
            py = H - bottom - (H - top - bottom) * k / 4
            draw.text((4, py - 6), f"{10**fy if log_y else fy:.3g}", fill=(0, 0, 0))
            fx = x0 + (x1 - x0) * k / 4
            draw.text((left + (W - left - right) * k / 4 - 10, H - bottom + 4), f"{fx:.4g}", fill=(0, 0, 0))
        colours = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]
        for i, (name, (sx, sy)) in enumerate(series.items()):
            c = colours[i % len(colours)]
            line = [to_px(x, y) for x, y in zip(sx, sy, strict=False) if math.isfinite(y) and (not log_y or y > 0)]
            if len(line) > 1:
                draw.line(line, fill=c, width=2)
            elif line:
                draw.ellipse([line[0][0] - 2, line[0][1] - 2, line[0][0] + 2, line[0][1] + 2], fill=c)
            draw.text((W - right + 8, top + 14 * i), name, fill=c)
    draw.text((left, 4), title, fill=(0, 0, 0))
    img.save(path)


def side_view(points: np.ndarray, valid: np.ndarray, size: int) -> np.ndarray:
    """Orthographic view from the camera's right (looking along -x) of valid points (L, H, W, 3),
    coloured by layer, with a z-buffer; returns (size, size, 3) uint8."""
    canvas = np.full((size, size, 3), 255, dtype=np.uint8)
    pts = points[valid]
    if len(pts) == 0:
        return canvas
    layer = np.nonzero(valid)[0]
    z, y, x = pts[:, 2], pts[:, 1], pts[:, 0]
    centre = np.array([np.median(z), np.median(y)])
    extent = max(np.ptp(z), np.ptp(y), 1e-6) * 1.1
    col = ((z - centre[0]) / extent + 0.5) * (size - 1)
    row = ((y - centre[1]) / extent + 0.5) * (size - 1)
    ok = (col >= 0) & (col < size) & (row >= 0) & (row < size)
    order = np.argsort(x[ok])  # nearest to the viewer (largest x) drawn last
    r, c, k = row[ok][order].astype(int), col[ok][order].astype(int), layer[ok][order]
    canvas[r, c] = (LAYER_COLOURS[k % len(LAYER_COLOURS)] * 255).astype(np.uint8)
    return canvas
