"""Scene layouts of the shared recipe: closed, outward pieces; cameras in free space; rooms and streets."""

from __future__ import annotations

import numpy as np
import torch

from core.data.layouts import OUTDOOR_SHARE, box, scene_layout, wall_with_opening
from core.data.recipe import look_rotation
from core.data.stream import merged
from core.geometry.raytrace import trace_camera


def signed_volume(mesh) -> float:
    v, f = mesh
    t = v[f]
    return float(np.einsum("ij,ij->i", t[:, 0], np.cross(t[:, 1], t[:, 2])).sum() / 6)


def first_hits(vertices: np.ndarray, faces: np.ndarray, camera, R: int = 32):
    """Layer-0 distance [R, R] and whether each first hit is a back face, seen from a layout camera."""
    position, direction, fov = camera
    rot = look_rotation(direction)
    cam_v = torch.from_numpy((vertices - position) @ rot.T).float()
    f = 0.5 * R / np.tan(0.5 * fov)
    K = torch.tensor([[f, 0, R / 2], [0, f, R / 2], [0, 0, 1.0]]).float()
    faces_t = torch.from_numpy(faces)
    distance, index = trace_camera(cam_v, faces_t, K, R, R, 2)
    tri = cam_v[faces_t[index[0].clamp_min(0)]]
    normal = torch.cross(tri[..., 1, :] - tri[..., 0, :], tri[..., 2, :] - tri[..., 0, :], dim=-1)
    back = (normal * tri[..., 0, :]).sum(-1) > 0  # the triangle faces away from the camera at the origin
    return distance[0].numpy(), (back & (index[0] >= 0)).numpy()


def test_boxes_and_walls_are_closed_outward_and_leave_their_openings_open():
    """A box's signed volume is its size's product; a wall with a window is four boxes around the hole."""
    assert abs(signed_volume(box((1, 2, 3), (1.0, 2.0, 3.0), yaw=0.7)) - 6.0) < 1e-9
    pieces = wall_with_opening((0.0, 0.0), (4.0, 0.0), 0.2, 2.5, (2.0, 1.0, 1.0, 2.0))
    assert len(pieces) == 4
    assert abs(sum(signed_volume(p) for p in pieces) - 0.2 * (4 * 2.5 - 1.0)) < 1e-9
    v, f = merged(pieces)
    through = (np.array([2.0, -3.0, 1.5]), np.array([0.0, 1.0, 0.0]), np.radians(1.0))  # at the window's middle
    beside = (np.array([0.7, -3.0, 1.5]), np.array([0.0, 1.0, 0.0]), np.radians(1.0))
    assert (first_hits(v, f, through, R=4)[0] == 0).all()
    assert np.allclose(first_hits(v, f, beside, R=4)[0], 2.9, rtol=1e-3)  # the wall's near face at y = -0.1


def test_layouts_draw_rooms_and_streets_around_a_camera_in_free_space():
    """Over 24 seeds both kinds appear near OUTDOOR_SHARE; every piece but the ground plane encloses a
    positive volume; the camera sees front faces only (it is inside no piece); a room surrounds it,
    a street has ground under the bottom row and sky above the horizon when the camera looks up."""
    kinds = []
    for seed in range(24):
        layout = scene_layout(np.random.default_rng(seed))
        kinds.append(layout.kind)
        closed = [p for p in layout.pieces if p.name != "ground"]
        assert min(signed_volume(p.mesh) for p in closed) > 0, (seed, layout.kind)
        v, f = merged([p.mesh for p in layout.pieces])
        distance, back = first_hits(v, f, layout.camera)
        assert back.mean() < 0.02, (seed, layout.kind, back.mean())
        if layout.kind == "room":
            assert (distance > 0).mean() > 0.6 and distance.max() < 12.0
        else:
            assert (distance[-1] > 0).all() and distance.max() > 20.0
            if layout.camera[1][2] > 0.05:  # looking up: the sky shows at the top
                assert (distance[0] == 0).any()
    share = kinds.count("outdoor") / len(kinds)
    assert {"room", "outdoor"} <= set(kinds) and abs(share - OUTDOOR_SHARE) < 0.25
