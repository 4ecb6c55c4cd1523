"""Scene layouts of the shared recipe (numpy only): rooms and outdoor streets as plain world-space
meshes, with a hand-held camera. Both data engines build scene mode from these: the Blender engine
(core/data/scenes.py) gives each piece a material and renders it, the torch stream
(core/data/stream.py) traces and shades the same pieces.

World units are metres, +z up. A room spans x ∈ [0, W], y ∈ [0, D], z ∈ [0, height]: floor,
maybe a ceiling, thick walls with door and window openings, sometimes a partition (L- and U-shaped
rooms) and a flight of stairs, then furniture-like assemblies (tables, cabinets, shelves) and
clutter (recipe shapes) on the floor and on table tops. An outdoor scene is a street: a ground
plane, buildings on both sides, vehicle-like assemblies, poles, and trees (cylinder trunks under
lumpy canopies); what lies beyond everything is sky (no surface). The camera is held at eye level
(sometimes lower), tilted slightly down, with a 22–70 mm full-frame-equivalent lens.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .recipe import FAMILIES, TRAIN_FAMILIES, Mesh, surface_of_revolution

SCENE_KINDS = ("room", "outdoor")
SURFACES = ("wall", "floor", "ground", "building", "object")  # material groups the engines colour
OUTDOOR_SHARE = 0.4  # fraction of scene samples that are outdoor streets
Camera = tuple[np.ndarray, np.ndarray, float]  # position (3,), viewing direction (3,), horizontal FOV (radians)


@dataclass
class Piece:
    """One mesh of a layout: world-space `mesh`, the material group `surface` it belongs to (pieces of
    one group share a material), flat or smooth shading, and `group`: pieces of one assembly share it."""

    name: str
    mesh: Mesh
    surface: str
    smooth: bool = False
    group: int = 0


@dataclass
class Layout:
    kind: str  # "room" or "outdoor"
    pieces: list[Piece]
    camera: Camera
    lamp: np.ndarray | None = None  # a ceiling lamp's position (rooms)
    meta: dict = field(default_factory=dict)  # sizes and counts, for the data set's record


# ----------------------------------------------------------------------------------------------
# Meshes
# ----------------------------------------------------------------------------------------------

_BOX_QUADS = np.array([[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]])
BOX_FACES = np.concatenate([_BOX_QUADS[:, [0, 1, 2]], _BOX_QUADS[:, [0, 2, 3]]])  # (12, 3), outward


def yaw_matrix(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def box(centre, size, yaw: float = 0.0) -> Mesh:
    """Closed box (8 vertices, 12 outward triangles) of `size` (3,) at `centre`, turned `yaw` about z."""
    corners = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)]) * np.asarray(size, float)
    return corners @ yaw_matrix(yaw).T + np.asarray(centre, float), BOX_FACES.copy()


def plane(low, high) -> Mesh:
    """Upward-facing rectangle at z = 0 spanning `low` to `high` (x, y): a ground without an underside."""
    (x0, y0), (x1, y1) = low, high
    return np.array([[x0, y0, 0.0], [x1, y0, 0.0], [x1, y1, 0.0], [x0, y1, 0.0]]), np.array([[0, 1, 2], [0, 2, 3]])


def cylinder(base, radius: float, height: float, segments: int = 16) -> Mesh:
    """Closed upright cylinder standing on `base` (3,), as a profile revolved about z."""
    v, f = surface_of_revolution(np.array([0.0, radius, radius, 0.0]), np.array([0.0, 0.0, height, height]), segments)
    return v + np.asarray(base, float), f


def lump(rng: np.random.Generator, centre, radii, segments: int = 16) -> Mesh:
    """A closed ellipsoid with a smooth random radial wobble (a tree canopy, a bush)."""
    theta = np.linspace(0.0, math.pi, segments // 2 + 1)
    v, f = surface_of_revolution(np.sin(theta), -np.cos(theta), segments)
    k = rng.normal(0.0, 2.5, (4, 3))
    wobble = 1.0 + 0.12 * np.sin(v @ k.T + rng.uniform(0, 2 * math.pi, 4)).mean(-1)
    return v * wobble[:, None] * np.asarray(radii, float) + np.asarray(centre, float), f


def fitted(mesh: Mesh, size: float, floor_point) -> Mesh:
    """`mesh` scaled so its largest side is `size`, standing on `floor_point` (its lowest z there)."""
    v, f = mesh
    v = (v - 0.5 * (v.min(0) + v.max(0))) * (size / max(np.ptp(v, axis=0).max(), 1e-9))
    return v + np.asarray(floor_point, float) - np.array([0.0, 0.0, v[:, 2].min()]), f


def hand_held_camera(rng: np.random.Generator, position, yaw: float) -> Camera:
    """Camera at `position` looking along `yaw` (± a little), slightly down-tilted, 22–70 mm equivalent."""
    pitch = rng.uniform(-0.35, 0.08)
    direction = np.array([math.cos(pitch) * math.cos(yaw), math.cos(pitch) * math.sin(yaw), math.sin(pitch)])
    focal_mm = math.exp(rng.uniform(math.log(22.0), math.log(70.0)))
    return np.asarray(position, float), direction, 2 * math.atan(18.0 / focal_mm)


# ----------------------------------------------------------------------------------------------
# Rooms
# ----------------------------------------------------------------------------------------------


def wall_with_opening(start, end, thickness: float, height: float, opening: tuple[float, float, float, float] | None) -> list[Mesh]:
    """A wall from `start` to `end` (floor points (2,)) as boxes, leaving `opening` (centre along the
    wall, width, bottom, top) open: the pieces left, right, below and above it."""
    start, end = np.asarray(start, float), np.asarray(end, float)
    length = float(np.linalg.norm(end - start))
    along = (end - start) / length
    yaw = math.atan2(along[1], along[0])
    spans = [(0.0, length, 0.0, height)]  # (from, to, bottom, top) along the wall
    if opening is not None:
        c, w, lo, hi = opening
        spans = [(0.0, c - w / 2, 0.0, height), (c + w / 2, length, 0.0, height), (c - w / 2, c + w / 2, 0.0, lo), (c - w / 2, c + w / 2, hi, height)]
    out = []
    for a, b, lo, hi in spans:
        if b - a > 1e-3 and hi - lo > 1e-3:
            mid = start + along * 0.5 * (a + b)
            out.append(box((mid[0], mid[1], 0.5 * (lo + hi)), (b - a, thickness, hi - lo), yaw))
    return out


def furniture_pieces(rng: np.random.Generator, x: float, y: float, shape: Callable[[str], Mesh], group: int) -> tuple[list[Piece], float, float]:
    """A table, cabinet, shelf or a recipe shape standing at (x, y); returns its pieces, footprint
    radius and top height (where clutter may stand)."""
    fw, fd, rot = rng.uniform(0.4, 1.6), rng.uniform(0.35, 1.0), rng.uniform(0, 2 * math.pi)
    turn = yaw_matrix(rot)[:2, :2]
    kind = str(rng.choice(["table", "cabinet", "shelf", "shape"]))
    meshes: list[Mesh] = []
    top = 0.0
    if kind == "table":
        top = rng.uniform(0.45, 1.0)
        meshes.append(box((x, y, top - 0.02), (fw, fd, 0.04), rot))
        for sx in (-1, 1):
            for sy in (-1, 1):
                dx, dy = turn @ np.array([sx * (fw / 2 - 0.05), sy * (fd / 2 - 0.05)])
                meshes.append(box((x + dx, y + dy, (top - 0.04) / 2), (0.05, 0.05, top - 0.04), rot))
    elif kind == "cabinet":
        top = rng.uniform(0.5, 2.0)
        meshes.append(box((x, y, top / 2), (fw, fd, top), rot))
    elif kind == "shelf":
        h, boards = rng.uniform(1.0, 2.0), int(rng.integers(2, 6))
        for k in range(boards):
            meshes.append(box((x, y, 0.02 + k * (h - 0.04) / (boards - 1)), (fw, fd * 0.5, 0.03), rot))
        for side in (-1, 1):
            dx, dy = turn @ np.array([side * fw / 2, 0.0])
            meshes.append(box((x + dx, y + dy, h / 2), (0.03, fd * 0.5, h), rot))
    else:
        size = rng.uniform(0.3, 1.0)
        mesh = fitted(shape(str(rng.choice(TRAIN_FAMILIES))), size, (x, y, 0.0))
        return [Piece(f"shape{group}", mesh, "object", smooth=True, group=group)], 0.5 * size, 0.0
    pieces = [Piece(f"{kind}{group}", m, "object", group=group) for m in meshes]
    return pieces, 0.5 * math.hypot(fw, fd), top


def room_layout(rng: np.random.Generator, shape: Callable[[str], Mesh]) -> Layout:
    """A room with openings, maybe a partition and stairs, furniture and clutter; camera inside it."""
    W, D, Hr = rng.uniform(3.0, 8.0), rng.uniform(3.0, 8.0), rng.uniform(2.4, 3.4)
    t = rng.uniform(0.08, 0.2)
    pieces = [Piece("floor", box((W / 2, D / 2, -t / 2), (W + 2 * t, D + 2 * t, t)), "floor")]
    if rng.random() < 0.8:
        pieces.append(Piece("ceiling", box((W / 2, D / 2, Hr + t / 2), (W + 2 * t, D + 2 * t, t)), "wall"))
    corners = [(-t / 2, -t / 2), (W + t / 2, -t / 2), (W + t / 2, D + t / 2), (-t / 2, D + t / 2)]
    openings = 0
    for k in range(4):
        start, end = np.array(corners[k]), np.array(corners[(k + 1) % 4])
        length = float(np.linalg.norm(end - start))
        opening = None
        if rng.random() < 0.55:
            door = rng.random() < 0.4
            w, h = (rng.uniform(0.8, 1.2), rng.uniform(1.9, 2.2)) if door else (rng.uniform(0.6, 2.0), rng.uniform(0.6, 1.4))
            lo = 0.0 if door else rng.uniform(0.5, max(Hr - 0.2 - h, 0.51))
            c = rng.uniform(w / 2 + 0.3, max(length - w / 2 - 0.3, w / 2 + 0.31))
            opening, openings = (c, w, lo, min(lo + h, Hr - 0.1)), openings + 1
        pieces += [Piece(f"wall{k}", m, "wall") for m in wall_with_opening(start, end, t, Hr, opening)]
    blocked: list[tuple[float, float, float]] = []  # (x, y, radius) footprints the camera keeps clear of
    partition = rng.random() < 0.3
    if partition:  # a wall part-way across the room: L- and U-shaped floor plans, a hidden space behind
        across_x = rng.random() < 0.5
        span, other = (W, D) if across_x else (D, W)
        at, reach = rng.uniform(0.35, 0.65) * other, rng.uniform(0.3, 0.7) * span
        a0 = 0.0 if rng.random() < 0.5 else span - reach
        ends = [(a0, at), (a0 + reach, at)] if across_x else [(at, a0), (at, a0 + reach)]
        pieces += [Piece("partition", m, "wall") for m in wall_with_opening(ends[0], ends[1], t, Hr, None)]
        for s in np.linspace(0, 1, 6):
            px, py = np.array(ends[0]) * (1 - s) + np.array(ends[1]) * s
            blocked.append((px, py, 0.2))
    if rng.random() < 0.2:  # a flight of stairs along the west wall
        steps, rise = int(rng.integers(6, 14)), Hr / 14
        run, width = rng.uniform(0.25, 0.32), rng.uniform(0.8, 1.2)
        y0 = rng.uniform(0.2, max(D - steps * run - 0.2, 0.21))
        for s in range(steps):
            y = y0 + (s + 0.5) * run
            pieces.append(Piece("stairs", box((width / 2, y, (s + 1) * rise / 2), (width, run, (s + 1) * rise)), "object", group=99))
            blocked.append((width / 2, y, width / 2))
    group = 1
    for _ in range(int(rng.integers(3, 10))):
        x, y = rng.uniform(0.5, W - 0.5), rng.uniform(0.5, D - 0.5)
        items, radius, top = furniture_pieces(rng, x, y, shape, group)
        pieces += items
        blocked.append((x, y, radius))
        group += 1
        if top > 0.3 and rng.random() < 0.5:  # clutter on the table or cabinet top
            size = rng.uniform(0.1, 0.3)
            mesh = fitted(shape(str(rng.choice(TRAIN_FAMILIES))), size, (x + rng.uniform(-0.1, 0.1), y + rng.uniform(-0.1, 0.1), top))
            pieces.append(Piece(f"clutter{group}", mesh, "object", smooth=True, group=group))
            group += 1
    for _ in range(50):
        cx, cy = rng.uniform(0.4, W - 0.4), rng.uniform(0.4, D - 0.4)
        if all(math.hypot(cx - bx, cy - by) > r + 0.3 for bx, by, r in blocked):
            break
    height = rng.uniform(1.3, min(1.8, Hr - 0.3)) if rng.random() < 0.8 else rng.uniform(0.6, 1.3)
    yaw = math.atan2(D / 2 - cy, W / 2 - cx) + rng.uniform(-1.0, 1.0)  # roughly toward the room's middle
    lamp = np.array([rng.uniform(0.5, W - 0.5), rng.uniform(0.5, D - 0.5), Hr - 0.3])
    meta = {"room": [W, D, Hr], "openings": openings, "partition": partition, "pieces": len(pieces)}
    return Layout("room", pieces, hand_held_camera(rng, (cx, cy, height), yaw), lamp, meta)


# ----------------------------------------------------------------------------------------------
# Streets
# ----------------------------------------------------------------------------------------------


def vehicle(rng: np.random.Generator, x: float, y: float, yaw: float, group: int) -> list[Piece]:
    """A car-like assembly: a body box, a cabin box and four wheels."""
    length, width = rng.uniform(3.5, 5.5), rng.uniform(1.6, 2.0)
    body, wheel = rng.uniform(0.6, 1.0), rng.uniform(0.3, 0.4)
    turn = yaw_matrix(yaw)[:2, :2]
    meshes = [box((x, y, wheel + body / 2), (length, width, body), yaw)]
    cab = rng.uniform(0.4, 0.7) * length
    dx, dy = turn @ np.array([rng.uniform(-0.15, 0.1) * length, 0.0])
    meshes.append(box((x + dx, y + dy, wheel + body + 0.3), (cab, width * 0.9, 0.6), yaw))
    pieces = [Piece(f"vehicle{group}", m, "object", group=group) for m in meshes]
    for sx in (-1, 1):
        for sy in (-1, 1):
            dx, dy = turn @ np.array([sx * 0.35 * length, sy * width / 2])
            v, f = cylinder((0.0, 0.0, -0.12), wheel, 0.24, 12)
            v = v[:, [0, 2, 1]] @ yaw_matrix(yaw).T + np.array([x + dx, y + dy, wheel])  # axle across the body
            pieces.append(Piece(f"wheel{group}", (v, f[:, ::-1]), "object", smooth=True, group=group))
    return pieces


def outdoor_layout(rng: np.random.Generator, shape: Callable[[str], Mesh]) -> Layout:
    """A street along +x: ground, building rows on both sides, vehicles, poles, trees and recipe shapes;
    the camera stands on the street before all of them (x ≤ 0) looking roughly along it."""
    street = rng.uniform(8.0, 24.0)  # distance between the building rows
    length = 120.0  # of the building rows; the ground reaches 140 m ahead
    pieces = [Piece("ground", plane((-60.0, -80.0), (140.0, 80.0)), "ground")]
    group = 1
    for side in (-1, 1):
        x = -20.0
        while x < length:
            w, d, h = rng.uniform(5.0, 16.0), rng.uniform(6.0, 14.0), rng.uniform(3.0, 25.0)
            if rng.random() < 0.85:
                y = side * (street / 2 + rng.uniform(0.0, 3.0) + d / 2)
                pieces.append(Piece(f"building{group}", box((x + w / 2, y, h / 2), (w, d, h)), "building", group=group))
                if rng.random() < 0.3:  # a roof storey set back
                    pieces.append(Piece(f"roof{group}", box((x + w / 2, y, h + 1.5), (w * 0.7, d * 0.7, 3.0)), "building", group=group))
                group += 1
            x += w + rng.uniform(0.0, 4.0)
    for _ in range(int(rng.integers(0, 6))):
        lane = rng.choice([-1, 1]) * street * rng.uniform(0.1, 0.3)
        pieces += vehicle(rng, rng.uniform(6.0, 60.0), lane, rng.choice([0.0, math.pi]) + rng.normal(0, 0.1), group)
        group += 1
    for _ in range(int(rng.integers(0, 10))):  # poles and trees along the pavements
        x, y = rng.uniform(5.0, 80.0), rng.choice([-1, 1]) * (street / 2 - rng.uniform(0.5, 1.5))
        if rng.random() < 0.5:
            h, r = rng.uniform(3.0, 8.0), rng.uniform(0.06, 0.15)
            pieces.append(Piece(f"pole{group}", cylinder((x, y, 0.0), r, h, 10), "object", smooth=True, group=group))
            if rng.random() < 0.5:
                pieces.append(Piece(f"sign{group}", box((x, y, h - 0.4), (0.05, rng.uniform(0.4, 1.0), 0.6), rng.uniform(0, math.pi)), "object", group=group))
        else:
            trunk, crown = rng.uniform(1.5, 4.0), rng.uniform(1.2, 3.5)
            pieces.append(Piece(f"trunk{group}", cylinder((x, y, 0.0), rng.uniform(0.1, 0.3), trunk + crown * 0.5, 10), "object", smooth=True, group=group))
            radii = crown * rng.uniform(0.7, 1.2, 3)
            pieces.append(Piece(f"crown{group}", lump(rng, (x, y, trunk + radii[2]), radii), "object", smooth=True, group=group))
        group += 1
    for _ in range(int(rng.integers(0, 4))):  # things on the pavement: benches, bins, sculptures
        x, y = rng.uniform(4.0, 40.0), rng.choice([-1, 1]) * (street / 2 - rng.uniform(0.5, 2.0))
        mesh = fitted(shape(str(rng.choice(TRAIN_FAMILIES))), rng.uniform(0.5, 2.0), (x, y, 0.0))
        pieces.append(Piece(f"shape{group}", mesh, "object", smooth=True, group=group))
        group += 1
    height = rng.uniform(1.4, 1.8) if rng.random() < 0.85 else rng.uniform(0.5, 1.4)
    position = (rng.uniform(-5.0, 0.0), rng.uniform(-0.35, 0.35) * street, height)
    yaw = rng.uniform(-0.6, 0.6)
    meta = {"street": street, "pieces": len(pieces)}
    return Layout("outdoor", pieces, hand_held_camera(rng, position, yaw), None, meta)


def scene_layout(rng: np.random.Generator, shape: Callable[[str], Mesh] | None = None) -> Layout:
    """A room or (OUTDOOR_SHARE of the time) a street. `shape(family)` makes a recipe family's mesh
    (default: a fresh one from `rng`; the torch stream reuses recent ones)."""
    make = shape or (lambda family: FAMILIES[family](rng))
    return outdoor_layout(rng, make) if rng.random() < OUTDOOR_SHARE else room_layout(rng, make)
