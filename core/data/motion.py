"""How a dynamic-mode clip moves (numpy only): the recipe's object scene animated over T frames.

A clip starts from one object scene of the shared recipe (`core/data/recipe.py`: parts, placement,
camera) and gives every part one motion, all of one kind per clip:
  static  nothing moves and the camera stands still (the clips temporal stability is measured on)
  rigid   each part drifts and spins about its centre
  hinge   each part swings about an edge of its bounding box, as a lid or a door opens
  bend    each part bends: every vertex turns about the part's centre by an angle that grows along
          the part's long side, so one end curls one way and the other end the other way
Except in static clips the camera orbits the object and moves a little closer or further away.
Motions are per frame and small (a clip of 4 frames moves parts by about a tenth of the object).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .layouts import Camera
from .recipe import Mesh

MOTIONS = ("static", "rigid", "hinge", "bend")
MOTION_SHARES = (0.2, 0.4, 0.2, 0.2)  # how often a clip has each kind
MAX_ANGLE = 0.15  # radians per frame a part turns at most
MAX_DRIFT = 0.03  # world units per frame a part drifts at most (the object spans about 1)
MAX_ORBIT = 0.06  # radians per frame the camera orbits at most
MAX_DOLLY = 0.03  # relative change of the camera's distance per frame at most


@dataclass
class PartMotion:
    """One part's motion: a turn of `angle` radians per frame about `axis` through `pivot`, and a drift of
    `velocity` per frame; for a bend, the turn scales with the position along `along` (unit) over `length`."""

    kind: str
    axis: np.ndarray  # (3,) unit
    pivot: np.ndarray  # (3,) world
    angle: float
    velocity: np.ndarray  # (3,)
    along: np.ndarray  # (3,) unit, bends only
    length: float  # the part's extent along `along`, bends only


def rotation_about(axis: np.ndarray, angle: float) -> np.ndarray:
    """The 3 × 3 rotation by `angle` radians about the unit `axis` (Rodrigues)."""
    x, y, z = axis
    k = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * (k @ k)


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def draw_motions(rng: np.random.Generator, meshes: list[Mesh], kind: str | None = None) -> list[PartMotion]:
    """One motion per placed part mesh, all of `kind` (default: drawn with MOTION_SHARES)."""
    kind = kind or str(rng.choice(MOTIONS, p=MOTION_SHARES))
    if kind not in MOTIONS:
        raise ValueError(f"unknown motion {kind!r}; choose from {', '.join(MOTIONS)}")
    motions = []
    for vertices, _ in meshes:
        lo, hi = vertices.min(0), vertices.max(0)
        centre, axis = 0.5 * (lo + hi), _unit(rng)
        angle = float(rng.uniform(0.3, 1.0) * MAX_ANGLE * rng.choice([-1, 1]))
        velocity, along, length, pivot = np.zeros(3), np.zeros(3), 0.0, centre
        if kind == "static":
            angle = 0.0
        elif kind == "rigid":
            velocity = _unit(rng) * rng.uniform(0.0, MAX_DRIFT)
        elif kind == "hinge":  # an edge of the bounding box, parallel to one of its axes
            k = int(rng.integers(3))
            axis = np.eye(3)[k]
            pivot = np.where(rng.random(3) < 0.5, lo, hi)
            pivot[k] = centre[k]
        else:  # bend about an axis across the part's longest side
            k = int(np.argmax(hi - lo))
            along, length = np.eye(3)[k], float(hi[k] - lo[k])
            axis = np.cross(along, _unit(rng))
            axis /= max(np.linalg.norm(axis), 1e-9)
            angle *= 2
        motions.append(PartMotion(kind, axis, pivot, angle, velocity, along, length))
    return motions


def moved(mesh: Mesh, motion: PartMotion, frame: int) -> Mesh:
    """The part `mesh` (world vertices (V, 3), faces) at `frame` (0: as placed)."""
    vertices, faces = mesh
    if frame == 0 or motion.kind == "static":
        return mesh
    offset = vertices - motion.pivot
    if motion.kind == "bend":
        s = offset @ motion.along / max(motion.length, 1e-9)  # (V,) in about [-0.5, 0.5]
        angles = motion.angle * frame * 2 * s
        k = motion.axis
        cos, sin = np.cos(angles)[:, None], np.sin(angles)[:, None]
        offset = offset * cos + np.cross(k, offset) * sin + np.outer(offset @ k, k) * (1 - cos)
    else:
        offset = offset @ rotation_about(motion.axis, motion.angle * frame).T
    return offset + motion.pivot + motion.velocity * frame, faces


def camera_path(rng: np.random.Generator, camera: Camera, frames: int, still: bool) -> list[Camera]:
    """The camera at each of `frames` frames: `camera` orbiting the origin about the world's up axis
    and dollying (or standing still when `still`)."""
    position, direction, fov = camera
    orbit = 0.0 if still else float(rng.uniform(-MAX_ORBIT, MAX_ORBIT))
    dolly = 0.0 if still else float(rng.uniform(-MAX_DOLLY, MAX_DOLLY))
    up = np.array([0.0, 0.0, 1.0])
    path = []
    for t in range(frames):
        turn = rotation_about(up, orbit * t)
        path.append((turn @ position * (1 + dolly * t), turn @ direction, fov))
    return path
