"""Pinhole cameras from geometry, and the matching Blender camera settings (numpy, no bpy).

Intrinsics are 3×3 matrices in pixels with pixel centres at (col+0.5, row+0.5), OpenCV convention.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SENSOR_MM = 36.0  # Blender's default sensor size; any value works, the lens scales with it


def make_intrinsics(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """(3, 3) float32 pinhole matrix."""
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=np.float32)


def fov_to_focal(fov: float, size: float) -> float:
    """Focal length in pixels for a field of view (radians) across `size` pixels."""
    return 0.5 * size / np.tan(0.5 * fov)


def _pixel_centres(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    v, u = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    return u, v


def _robust_line_fit(a: np.ndarray, b: np.ndarray, iterations: int = 4) -> tuple[float, float]:
    """Least squares b ≈ s·a + c, refitted on the inliers (residual ≤ 3·1.4826·MAD)."""
    keep = np.ones(a.shape, dtype=bool)
    for _ in range(iterations):
        A = np.stack([a[keep], np.ones(keep.sum())], axis=1)
        (s, c), *_ = np.linalg.lstsq(A, b[keep], rcond=None)
        r = np.abs(b - (s * a + c))
        mad = np.median(r[keep])
        new_keep = r <= max(3.0 * 1.4826 * mad, 1e-9)
        if new_keep.sum() < 10 or np.array_equal(new_keep, keep):
            break
        keep = new_keep
    return float(s), float(c)


def points_to_intrinsics(points: np.ndarray, mask: np.ndarray, min_points: int = 10) -> np.ndarray:
    """Solve fx, fy, cx, cy from one layer of pixel-aligned points, per axis by robust least squares.

    Fits u + 0.5 = fx·X/Z + cx and v + 0.5 = fy·Y/Z + cy over masked pixels with Z > 1e-6,
    refitting on inliers so a few percent of outliers do not bias the result.
    points: (H, W, 3); mask: (H, W) bool. Returns (3, 3) float32. Raises ValueError with fewer
    than `min_points` usable pixels.
    """
    H, W = mask.shape
    p = points.astype(np.float64)
    ok = mask & (p[..., 2] > 1e-6) & np.all(np.isfinite(p), axis=-1)
    if ok.sum() < min_points:
        raise ValueError(
            f"need at least {min_points} foreground pixels in front of the camera to solve intrinsics, "
            f"got {int(ok.sum())}"
        )
    u, v = _pixel_centres(H, W)
    x, y, z = p[ok, 0], p[ok, 1], p[ok, 2]
    fx, cx = _robust_line_fit(x / z, u[ok])
    fy, cy = _robust_line_fit(y / z, v[ok])
    return make_intrinsics(fx, fy, cx, cy)


@dataclass(frozen=True)
class BlenderCamera:
    """Blender camera and render settings that reproduce a pinhole matrix (DESIGN.md §7)."""

    lens: float  # mm
    sensor_fit: str  # 'HORIZONTAL' or 'VERTICAL'
    sensor_size: float  # mm, used for both sensor_width and sensor_height
    shift_x: float
    shift_y: float
    resolution_x: int
    resolution_y: int
    pixel_aspect_x: float
    pixel_aspect_y: float


def intrinsics_to_blender_camera(
    intrinsics: np.ndarray, width: int, height: int, sensor: float = SENSOR_MM
) -> BlenderCamera:
    """Blender lens, sensor fit, shift and pixel aspect for a pinhole matrix on a W×H image.

    Blender measures the view plane against `viewfac` = W (horizontal fit) or
    ycor·H (vertical fit) with ycor = pixel_aspect_y / pixel_aspect_x = fx / fy; then
    lens = fx·sensor/viewfac, shift_x = (W/2 - cx)/viewfac and shift_y = (cy - H/2)·ycor/viewfac.
    """
    fx, fy = float(intrinsics[0, 0]), float(intrinsics[1, 1])
    cx, cy = float(intrinsics[0, 2]), float(intrinsics[1, 2])
    ycor = fx / fy
    aspect_x, aspect_y = (1.0, ycor) if ycor >= 1.0 else (1.0 / ycor, 1.0)
    fit = "HORIZONTAL" if width >= height else "VERTICAL"
    viewfac = width if fit == "HORIZONTAL" else ycor * height
    return BlenderCamera(
        lens=fx * sensor / viewfac,
        sensor_fit=fit,
        sensor_size=sensor,
        shift_x=(width / 2 - cx) / viewfac,
        shift_y=(cy - height / 2) * ycor / viewfac,
        resolution_x=int(width),
        resolution_y=int(height),
        pixel_aspect_x=aspect_x,
        pixel_aspect_y=aspect_y,
    )


def blender_camera_to_intrinsics(
    lens: float,
    sensor_width: float,
    sensor_height: float,
    sensor_fit: str,
    shift_x: float,
    shift_y: float,
    width: int,
    height: int,
    pixel_aspect_x: float = 1.0,
    pixel_aspect_y: float = 1.0,
) -> np.ndarray:
    """Pinhole matrix (pixels) of a Blender perspective camera rendering a W×H image; inverse of the above."""
    ycor = pixel_aspect_y / pixel_aspect_x
    if sensor_fit == "AUTO":
        sensor_fit = "HORIZONTAL" if pixel_aspect_x * width >= pixel_aspect_y * height else "VERTICAL"
    sensor = sensor_width if sensor_fit == "HORIZONTAL" else sensor_height
    viewfac = width if sensor_fit == "HORIZONTAL" else ycor * height
    fx = lens * viewfac / sensor
    return make_intrinsics(fx, fx / ycor, width / 2 - shift_x * viewfac, height / 2 + shift_y * viewfac / ycor)
