"""Render one Blender scene and trace every surface crossing through every pixel centre.

Runs inside a Blender process; bpy and mathutils are imported inside the functions only.
The tracer builds one BVH over the evaluated triangles of every rendered mesh object and re-casts
past each hit, so layer k holds the (k+1)-th crossing of the pixel's ray, back faces included.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..geometry.camera import blender_camera_to_intrinsics
from ..geometry.points import pixel_rays

#: OpenCV camera axes expressed in Blender camera axes (x, -y, -z).
CV_TO_BLENDER = np.diag([1.0, -1.0, -1.0])


class SkipSample(Exception):
    """This random scene cannot give a valid sample (reason in the message); draw another."""


@dataclass
class TracedSample:
    """One ground-truth sample: the render and all ray crossings.

    rgba:         (H, W, 4) uint8 render, alpha from a transparent film.
    distance:     (L, H, W) float32 distance along each pixel's unit ray; 0 where the ray has no (k+1)-th hit.
    intrinsics:   (3, 3) float32 pinhole matrix in pixels.
    cam_to_world: (4, 4) float32 OpenCV camera-to-world matrix.
    back_facing:  (H, W) bool, first hit seen from behind (used to detect cameras inside objects).
    """

    rgba: np.ndarray
    distance: np.ndarray
    intrinsics: np.ndarray
    cam_to_world: np.ndarray
    back_facing: np.ndarray


def traced_objects() -> list:
    """Mesh objects that render (boolean cutters and other helpers excluded)."""
    import bpy

    return [o for o in bpy.context.scene.objects if o.type == "MESH" and not o.hide_render]


def evaluated_mesh(obj, depsgraph, triangles: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """World-space vertices (N, 3) float64 and triangles (M, 3) int64 of an object as it renders
    (modifiers applied); no triangles when `triangles` is False."""
    ev = obj.evaluated_get(depsgraph)
    mesh = ev.to_mesh()
    co = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
    mesh.vertices.foreach_get("co", co)
    tri = np.zeros((0, 3), dtype=np.int64)
    if triangles:
        mesh.calc_loop_triangles()
        tri = np.empty(len(mesh.loop_triangles) * 3, dtype=np.int64)
        mesh.loop_triangles.foreach_get("vertices", tri)
    m = np.array(ev.matrix_world, dtype=np.float64)
    ev.to_mesh_clear()
    return co.reshape(-1, 3) @ m[:3, :3].T + m[:3, 3], tri.reshape(-1, 3)


def scene_triangles(log: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """World-space vertices (N, 3) float64 and triangles (M, 3) int of the evaluated scene.

    Objects whose evaluated mesh has zero area are left out, with a reason appended to `log`.
    """
    import bpy

    depsgraph = bpy.context.evaluated_depsgraph_get()
    verts, tris, offset = [], [], 0
    for obj in traced_objects():
        co, tri = evaluated_mesh(obj, depsgraph)
        area = 0.5 * np.linalg.norm(np.cross(co[tri[:, 1]] - co[tri[:, 0]], co[tri[:, 2]] - co[tri[:, 0]]), axis=1).sum() if len(tri) else 0.0
        if area < 1e-10:
            log.append(f"skipped object {obj.name}: zero-area mesh")
            continue
        verts.append(co)
        tris.append(tri + offset)
        offset += len(co)
    if not verts:
        raise SkipSample("the scene has no renderable triangles")
    return np.concatenate(verts), np.concatenate(tris)


def camera_model(cam, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(3, 3) intrinsics and (4, 4) OpenCV camera-to-world matrix of a Blender camera object."""
    d = cam.data
    intrinsics = blender_camera_to_intrinsics(d.lens, d.sensor_width, d.sensor_height, d.sensor_fit,
                                              d.shift_x, d.shift_y, width, height)
    m = np.array(cam.matrix_world, dtype=np.float64)
    m[:3, :3] = m[:3, :3] / np.linalg.norm(m[:3, :3], axis=0) @ CV_TO_BLENDER
    return intrinsics, m.astype(np.float32)


def trace_layers(vertices: np.ndarray, triangles: np.ndarray, origin: np.ndarray, directions: np.ndarray,
                 max_layers: int, eps: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """All crossings of rays with triangles, front to back, by re-casting past each hit.

    vertices (N, 3), triangles (M, 3), origin (3,), directions (R, 3) unit world-space.
    Returns distance (max_layers, R) float32 (0 = no hit) and back_facing (R,) bool of the first hit.
    """
    from mathutils import Vector
    from mathutils.bvhtree import BVHTree

    bvh = BVHTree.FromPolygons(vertices.tolist(), triangles.tolist(), all_triangles=True)
    o = Vector(origin.tolist())
    distance = np.zeros((max_layers, len(directions)), dtype=np.float32)
    back = np.zeros(len(directions), dtype=bool)
    for r, d in enumerate(directions.tolist()):
        d = Vector(d)
        start = o
        for k in range(max_layers):
            loc, normal, _, _ = bvh.ray_cast(start, d)
            if loc is None:
                break
            distance[k, r] = (loc - o).dot(d)
            if k == 0:
                back[r] = normal.dot(d) > 0
            start = loc + d * eps
    return distance, back


def render_rgba() -> np.ndarray:
    """Render the scene with its current settings and return (H, W, 4) uint8, top row first."""
    import bpy
    from PIL import Image

    scene = bpy.context.scene
    with tempfile.TemporaryDirectory() as tmp:
        scene.render.filepath = str(Path(tmp) / "render.png")
        bpy.ops.render.render(write_still=True)
        with Image.open(scene.render.filepath) as im:
            return np.array(im.convert("RGBA"))


def render_and_trace(max_layers: int, log: list[str], max_back_facing: float = 0.5) -> TracedSample:
    """Render the current scene through its camera and trace all layers at its resolution.

    Raises SkipSample when nothing is hit or the camera sits inside a closed object (more than
    `max_back_facing` of all first hits are back faces).
    """
    import bpy

    scene = bpy.context.scene
    W, H = scene.render.resolution_x, scene.render.resolution_y
    intrinsics, cam_to_world = camera_model(scene.camera, W, H)
    vertices, triangles = scene_triangles(log)
    rays = pixel_rays(torch.from_numpy(intrinsics).double(), H, W).numpy().reshape(-1, 3)
    rays = rays / np.linalg.norm(rays, axis=1, keepdims=True)
    directions = rays @ cam_to_world[:3, :3].T.astype(np.float64)
    distance, back = trace_layers(vertices, triangles, cam_to_world[:3, 3].astype(np.float64), directions, max_layers)
    hits = distance[0] > 0
    if not hits.any():
        raise SkipSample("the camera sees no surface")
    if back.mean() > max_back_facing:
        raise SkipSample(f"camera inside an object ({back.mean():.0%} of first hits are back faces)")
    return TracedSample(render_rgba(), distance.reshape(max_layers, H, W), intrinsics, cam_to_world, back.reshape(H, W))
