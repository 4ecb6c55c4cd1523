"""Intrinsics from geometry, and the Blender camera that reproduces them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.geometry.camera import (
    blender_camera_to_intrinsics,
    intrinsics_to_blender_camera,
    make_intrinsics,
    points_to_intrinsics,
)


def synthetic_points(K, H, W, seed=0):
    rng = np.random.default_rng(seed)
    v, u = np.mgrid[0:H, 0:W] + 0.5
    z = 1.5 + rng.random((H, W)) * 2
    x, y = (u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z
    return np.stack([x, y, z], -1)


@pytest.mark.parametrize(
    "K, H, W",
    [
        (make_intrinsics(120.3, 118.7, 61.2, 67.9), 128, 140),
        (make_intrinsics(800.0, 800.0, 320.0, 240.0), 480, 640),
        (make_intrinsics(55.0, 61.0, 20.0, 30.0), 48, 36),
    ],
)
def test_points_to_intrinsics_recovers_synthetic_cameras(K, H, W):
    """Exact pixel-aligned points give fx, fy, cx, cy to 1e-3 relative, also with 5% outliers."""
    pts = synthetic_points(K, H, W)
    mask = np.ones((H, W), bool)
    np.testing.assert_allclose(points_to_intrinsics(pts, mask), K, rtol=1e-3)
    rng = np.random.default_rng(1)
    bad = rng.random((H, W)) < 0.05
    pts[bad] += rng.normal(size=(bad.sum(), 3)) * 0.5
    np.testing.assert_allclose(points_to_intrinsics(pts, mask), K, rtol=1e-3)


def test_too_few_points_is_a_clear_error():
    """Fewer than 10 usable pixels raise ValueError saying so."""
    with pytest.raises(ValueError, match="at least 10"):
        points_to_intrinsics(np.ones((4, 4, 3)), np.zeros((4, 4), bool))


@pytest.mark.parametrize(
    "W, H, K",
    [
        (64, 48, make_intrinsics(70.0, 70.0, 30.5, 25.25)),
        (40, 72, make_intrinsics(90.0, 90.0, 21.0, 33.0)),
        (50, 50, make_intrinsics(60.0, 48.0, 25.0, 26.0)),
    ],
)
def test_blender_camera_reproduces_intrinsics_in_blender(blender, W, H, K):
    """Points projected by a Blender camera built from K (world_to_camera_view) match K's projection."""
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector

    bpy = blender
    cam = intrinsics_to_blender_camera(K, W, H)
    np.testing.assert_allclose(
        blender_camera_to_intrinsics(
            cam.lens,
            cam.sensor_size,
            cam.sensor_size,
            cam.sensor_fit,
            cam.shift_x,
            cam.shift_y,
            W,
            H,
            cam.pixel_aspect_x,
            cam.pixel_aspect_y,
        ),
        K,
        rtol=1e-5,
    )
    scene = bpy.context.scene
    data = bpy.data.cameras.new("cam")
    data.sensor_fit, data.sensor_width, data.sensor_height = cam.sensor_fit, cam.sensor_size, cam.sensor_size
    data.lens, data.shift_x, data.shift_y = cam.lens, cam.shift_x, cam.shift_y
    obj = bpy.data.objects.new("cam", data)
    obj.rotation_euler = (math.pi / 2, 0, 0)  # looks along +Y: OpenCV (x, y, z) is world (x, z, -y)
    scene.collection.objects.link(obj)
    scene.render.resolution_x, scene.render.resolution_y = W, H
    scene.render.pixel_aspect_x, scene.render.pixel_aspect_y = cam.pixel_aspect_x, cam.pixel_aspect_y
    bpy.context.view_layer.update()
    rng = np.random.default_rng(0)
    for _ in range(20):
        p = np.array([rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(2, 6)])
        ndc = world_to_camera_view(scene, obj, Vector((p[0], p[2], -p[1])))
        u, v = ndc.x * W, (1 - ndc.y) * H
        assert u == pytest.approx(K[0, 0] * p[0] / p[2] + K[0, 2], abs=1e-3)
        assert v == pytest.approx(K[1, 1] * p[1] / p[2] + K[1, 2], abs=1e-3)
