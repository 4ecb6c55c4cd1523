"""The one recipe both data engines follow (numpy only): which shapes a sample holds, where they sit,
and where the camera looks from. The Blender engine renders these meshes with Cycles and traces
them with BVH ray casts; the torch stream traces and shades the same meshes on the fly.

Shapes come in generator families. Training draws from TRAIN_FAMILIES; HELD_OUT_FAMILIES never
appear in training, so a validation split made of them measures generalisation to new kinds of
shape, not just new seeds:
  primitive   spheres, boxes, cylinders, tubes, cones, tori, planes with displacement, twists,
              bends, tapers, shells and cuts
  blob        smooth unions of ellipsoids and capsules (organic lumps), sometimes bumpy
  revolution  solids of revolution from random profiles: vases, bottles and cups with hollow insides
  mechanical  extruded, rounded plates and brackets with through-holes and pockets
  shell       thin shells: open boxes, bowls, bent panels
  creature    (held out) body, head, legs and a tail blended into one smooth animal-like shape
  furniture   (held out) chairs, tables and lamps assembled from boards, legs and shades
A scene holds one to three shapes of independently drawn families, so families also mix.

Meshes are (vertices (V, 3) float64, faces (F, 3) int64) with counter-clockwise, outward faces;
implicit shapes are meshed from a signed distance field with naive surface nets.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

Mesh = tuple[np.ndarray, np.ndarray]
Sdf = Callable[[np.ndarray], np.ndarray]  # points (..., 3) → signed distance (...), negative inside

OBJECT_RADIUS = 0.5  # object scenes are scaled into a sphere of this radius at the origin
SDF_RESOLUTION = 64  # grid points per axis when meshing an implicit shape


# ----------------------------------------------------------------------------------------------
# Meshing
# ----------------------------------------------------------------------------------------------


def grid_faces(rows: int, cols: int, wrap: bool) -> np.ndarray:
    """Two triangles per cell of a rows × cols vertex grid (row-major), columns wrapping if `wrap`."""
    r, c = np.meshgrid(np.arange(rows - 1), np.arange(cols if wrap else cols - 1), indexing="ij")
    a, b = r * cols + c, r * cols + (c + 1) % cols
    d, e = a + cols, b + cols
    return np.concatenate([np.stack([a, d, b], -1).reshape(-1, 3), np.stack([b, d, e], -1).reshape(-1, 3)])


def surface_of_revolution(radius: np.ndarray, height: np.ndarray, segments: int = 64) -> Mesh:
    """Revolve a profile (r_i, z_i) about z. A profile that starts and ends on the axis (r = 0), with
    z increasing up its outside, gives a closed surface with outward faces."""
    phi = np.arange(segments) * (2 * math.pi / segments)
    v = np.stack([radius[:, None] * np.cos(phi), radius[:, None] * np.sin(phi), np.repeat(height[:, None], segments, 1)], -1)
    return v.reshape(-1, 3), grid_faces(len(radius), segments, wrap=True)[:, [0, 2, 1]]


def surface_nets(sdf: Sdf, half_extent: float = 0.75, resolution: int = SDF_RESOLUTION) -> Mesh:
    """A closed mesh of the zero set of `sdf` sampled on a cube grid of side 2·half_extent.

    Naive surface nets: one vertex per grid cell the surface crosses (the mean of the crossings on
    its edges), one quad (two triangles) per grid edge with a sign change, joining the four cells
    around it and facing the outside. The field must be positive on the grid's boundary.
    """
    g = np.linspace(-half_extent, half_extent, resolution, dtype=np.float32)
    step = g[1] - g[0]
    values = sdf(np.stack(np.meshgrid(g, g, g, indexing="ij"), -1))  # (N, N, N)
    n = resolution - 1  # cells per axis
    offsets = np.array([(a, b, c) for a in (0, 1) for b in (0, 1) for c in (0, 1)])
    inside = values < 0
    corners = np.stack([inside[a : a + n, b : b + n, c : c + n] for a, b, c in offsets], -1)  # (n, n, n, 8)
    active = corners.any(-1) & ~corners.all(-1)
    cells = np.argwhere(active)  # (M, 3) cells the surface crosses
    corner_values = np.stack([values[tuple((cells + o).T)] for o in offsets], -1)  # (M, 8)
    total = np.zeros((len(cells), 3))
    count = np.zeros(len(cells))
    for i in range(8):
        for j in range(i + 1, 8):
            if bin(i ^ j).count("1") != 1:
                continue  # not a cube edge
            vi, vj = corner_values[:, i], corner_values[:, j]
            crossing = (vi < 0) != (vj < 0)
            t = np.where(crossing, vi / np.where(crossing, vi - vj, 1.0), 0.0)
            total += (offsets[i] + t[:, None] * (offsets[j] - offsets[i])) * crossing[:, None]
            count += crossing
    index = np.full((n, n, n), -1, dtype=np.int64)
    index[tuple(cells.T)] = np.arange(len(cells))
    vertices = -half_extent + step * (cells + total / count[:, None])
    quads = []
    for axis in range(3):
        u, v = (axis + 1) % 3, (axis + 2) % 3
        lo = inside.take(range(0, resolution - 1), axis)
        hi = inside.take(range(1, resolution), axis)
        flips = np.argwhere(lo != hi)  # grid points p whose edge p → p + e_axis crosses the surface
        flips = flips[(flips[:, u] > 0) & (flips[:, u] < n) & (flips[:, v] > 0) & (flips[:, v] < n)]
        outward = lo[tuple(flips.T)]  # inside at p: the surface faces +axis

        def cell(du: int, dv: int, flips: np.ndarray = flips, u: int = u, v: int = v) -> np.ndarray:
            c = flips.copy()
            c[:, u] -= du
            c[:, v] -= dv
            return index[tuple(c.T)]

        ring = np.stack([cell(1, 1), cell(0, 1), cell(0, 0), cell(1, 0)], -1)  # counter-clockwise about +axis
        quads.append(np.where(outward[:, None], ring, ring[:, ::-1]))
    q = np.concatenate(quads)
    faces = np.concatenate([q[:, [0, 1, 2]], q[:, [0, 2, 3]]])
    return vertices, faces


# ----------------------------------------------------------------------------------------------
# Signed distance fields (points (..., 3) → distances (...))
# ----------------------------------------------------------------------------------------------


def sd_ellipsoid(p: np.ndarray, centre, radii, rotation: np.ndarray | None = None) -> np.ndarray:
    q = p - np.asarray(centre)
    if rotation is not None:
        q = q @ rotation  # into the ellipsoid's frame
    r = np.asarray(radii, dtype=np.float64)
    return (np.linalg.norm(q / r, axis=-1) - 1.0) * r.min()


def sd_capsule(p: np.ndarray, a, b, radius: float) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    ab = b - a
    t = np.clip(((p - a) @ ab) / max(float(ab @ ab), 1e-12), 0.0, 1.0)
    return np.linalg.norm(p - a - t[..., None] * ab, axis=-1) - radius


def sd_box(p: np.ndarray, centre, half, rounding: float = 0.0) -> np.ndarray:
    q = np.abs(p - np.asarray(centre)) - (np.asarray(half) - rounding)
    outside = np.linalg.norm(np.maximum(q, 0.0), axis=-1)
    return outside + np.minimum(q.max(-1), 0.0) - rounding


def sd_cylinder_z(p: np.ndarray, centre, radius: float, half_height: float) -> np.ndarray:
    q = p - np.asarray(centre)
    d = np.stack([np.hypot(q[..., 0], q[..., 1]) - radius, np.abs(q[..., 2]) - half_height], -1)
    return np.minimum(d.max(-1), 0.0) + np.linalg.norm(np.maximum(d, 0.0), axis=-1)


def smooth_union(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum: blends the two shapes over a width of about k."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b * (1 - h) + a * h - k * h * (1 - h)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3 × 3 rotation."""
    w, x, y, z = (q := rng.normal(size=4)) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def bumps(rng: np.random.Generator, amplitude: float) -> Sdf:
    """A smooth random offset field (a sum of sinusoids) to add to a distance field."""
    k = rng.normal(0, 1, (5, 3)) * rng.uniform(4, 12)
    phase = rng.uniform(0, 2 * math.pi, 5)
    return lambda p: amplitude * np.sin(p @ k.T + phase).mean(-1)


# ----------------------------------------------------------------------------------------------
# Families
# ----------------------------------------------------------------------------------------------


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    tri = vertices[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    out = np.zeros_like(vertices)
    np.add.at(out, faces.ravel(), np.repeat(n, 3, axis=0))
    return out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)


def primitive(rng: np.random.Generator) -> Mesh:
    """A deformed primitive: sphere, box, cylinder, tube (open), cone, torus or plane."""
    kind = str(rng.choice(["sphere", "box", "cylinder", "tube", "cone", "torus", "plane"]))
    n = 32
    if kind == "sphere":
        theta = np.linspace(0, math.pi, n)
        mesh = surface_of_revolution(0.5 * np.sin(theta), -0.5 * np.cos(theta))
    elif kind == "cylinder":
        mesh = surface_of_revolution(np.r_[0, np.full(n, 0.4), 0], np.r_[-0.5, np.linspace(-0.5, 0.5, n), 0.5])
    elif kind == "tube":
        mesh = surface_of_revolution(np.full(n, 0.4), np.linspace(-0.5, 0.5, n))
    elif kind == "cone":
        z = np.linspace(-0.5, 0.5, n)
        top = rng.uniform(0.0, 0.3)
        mesh = surface_of_revolution(np.r_[0, 0.5 - (0.5 - top) * (z + 0.5), 0], np.r_[-0.5, z, 0.5])
    elif kind == "torus":
        minor = rng.uniform(0.08, 0.2)
        mesh = surface_nets(lambda p: np.hypot(np.hypot(p[..., 0], p[..., 1]) - 0.4, p[..., 2]) - minor)
    elif kind == "plane":
        g = np.linspace(-0.5, 0.5, n)
        y, x = np.meshgrid(g, g, indexing="ij")
        mesh = np.stack([x, y, np.zeros_like(x)], -1).reshape(-1, 3), grid_faces(n, n, wrap=False)
    else:
        mesh = surface_nets(lambda p: sd_box(p, (0, 0, 0), (0.4, 0.4, 0.4), rng.uniform(0.0, 0.08)))
    return deform(mesh, rng)


def deform(mesh: Mesh, rng: np.random.Generator) -> Mesh:
    """Random displacement along normals, a twist/bend/taper, a shell (inner wall) and a planar cut."""
    v, f = mesh
    if rng.random() < 0.4:
        v = v + bumps(rng, rng.uniform(0.03, 0.12))(v)[:, None] * vertex_normals(v, f)
    if rng.random() < 0.35:
        axis = int(rng.integers(3))
        a, b = [k for k in range(3) if k != axis]
        s = v[:, axis]
        v = v.copy()
        kind = rng.choice(["twist", "bend", "taper"])
        if kind == "twist":
            angle = s * rng.uniform(-3, 3)
            x, y = v[:, a].copy(), v[:, b].copy()
            v[:, a], v[:, b] = x * np.cos(angle) - y * np.sin(angle), x * np.sin(angle) + y * np.cos(angle)
        elif kind == "taper":
            scale = 1 + rng.uniform(-0.8, 0.8) * s
            v[:, a] *= scale
            v[:, b] *= scale
        else:
            v[:, a] += rng.uniform(-0.8, 0.8) * s**2
    if rng.random() < 0.3:  # a shell: an inner wall facing inwards
        inner = v - rng.uniform(0.03, 0.1) * vertex_normals(v, f)
        f = np.concatenate([f, f[:, ::-1] + len(v)])
        v = np.concatenate([v, inner])
    if rng.random() < 0.35:  # cut away what lies beyond a random plane (opens shells, shows insides)
        normal = rng.normal(size=3)
        keep = (v[f].mean(1) @ (normal / np.linalg.norm(normal))) < rng.uniform(0.0, 0.3)
        if keep.sum() > 0.3 * len(f):
            f = f[keep]
    return v, f


def blob(rng: np.random.Generator) -> Mesh:
    """Two to six ellipsoids and capsules blended into one organic lump, sometimes bumpy."""
    parts: list[Sdf] = []
    for _ in range(int(rng.integers(2, 7))):
        centre = rng.uniform(-0.3, 0.3, 3)
        if rng.random() < 0.7:
            parts.append(partial(sd_ellipsoid, centre=centre, radii=rng.uniform(0.08, 0.3, 3), rotation=random_rotation(rng)))
        else:
            parts.append(partial(sd_capsule, a=centre, b=centre + rng.normal(0, 0.25, 3), radius=rng.uniform(0.05, 0.15)))
    k = rng.uniform(0.03, 0.15)
    noise = bumps(rng, rng.uniform(0.005, 0.03)) if rng.random() < 0.5 else (lambda p: np.zeros(p.shape[:-1]))

    def sdf(p: np.ndarray) -> np.ndarray:
        d = parts[0](p)
        for part in parts[1:]:
            d = smooth_union(d, part(p), k)
        return d + noise(p)

    return surface_nets(sdf)


def revolution(rng: np.random.Generator) -> Mesh:
    """A vase (solid), or a bottle or cup (hollow, open at the top), from a random smooth profile."""
    kind = str(rng.choice(["vase", "bottle", "cup"]))
    z = np.linspace(-0.5, 0.5, 40)
    terms = rng.normal(0, 1, 4) * np.array([0.08, 0.05, 0.03, 0.02])
    r = rng.uniform(0.2, 0.35) + sum(a * np.cos((k + 1) * math.pi * (z + 0.5)) for k, a in enumerate(terms))
    if kind == "bottle":
        neck = z > rng.uniform(0.1, 0.3)
        r = np.where(neck, rng.uniform(0.05, 0.1), r)
        r = np.convolve(np.pad(r, 2, mode="edge"), np.ones(5) / 5, mode="valid")  # round the shoulder
    r = np.clip(r, 0.04, 0.5)
    if kind == "vase":
        return surface_of_revolution(np.r_[0, r, 0], np.r_[-0.5, z, 0.5])
    wall = rng.uniform(0.02, 0.05)
    bottom = -0.5 + rng.uniform(0.03, 0.1)
    inner_z = z[z > bottom + wall][::-1]
    inner_r = np.maximum(np.interp(inner_z, z, r) - wall, 0.01)
    radius = np.r_[0, r, inner_r, 0]  # outside up, over the rim, inside down, across the floor
    height = np.r_[-0.5, z, inner_z, bottom]
    return surface_of_revolution(radius, height)


def mechanical(rng: np.random.Generator) -> Mesh:
    """An extruded rounded plate (or an L-bracket) with through-holes and pockets."""
    half = np.array([rng.uniform(0.25, 0.45), rng.uniform(0.15, 0.4), rng.uniform(0.04, 0.15)])
    rounding = rng.uniform(0.0, 0.8) * half[2]
    bracket = rng.random() < 0.35
    holes = [(rng.uniform(-0.8, 0.8, 2) * half[:2], rng.uniform(0.03, 0.09)) for _ in range(int(rng.integers(1, 5)))]
    pockets = [(rng.uniform(-0.6, 0.6, 2) * half[:2], rng.uniform(0.05, 0.12, 2)) for _ in range(int(rng.integers(0, 3)))]

    def sdf(p: np.ndarray) -> np.ndarray:
        d = sd_box(p, (0, 0, 0), half, rounding)
        if bracket:  # a second plate standing on one edge
            d = np.minimum(d, sd_box(p, (-half[0] + half[2], 0, half[1]), (half[2], half[1], half[1]), rounding))
        for (x, y), radius in holes:
            d = np.maximum(d, -sd_cylinder_z(p, (x, y, 0), radius, 1.0))
        for (x, y), size in pockets:
            d = np.maximum(d, -sd_box(p, (x, y, half[2]), (size[0], size[1], 0.6 * half[2])))
        return d

    return surface_nets(sdf)


def shell(rng: np.random.Generator) -> Mesh:
    """A thin shell: an open box, a bowl or a bent panel."""
    kind = str(rng.choice(["box", "bowl", "panel"]))
    t = rng.uniform(0.025, 0.05)  # wall thickness
    if kind == "box":
        half = rng.uniform(0.2, 0.45, 3)

        def sdf(p: np.ndarray) -> np.ndarray:
            outer = sd_box(p, (0, 0, 0), half)
            inner = sd_box(p, (0, 0, t), half - t)  # reaches past the top: the box is open there
            return np.maximum(outer, -inner)

    elif kind == "bowl":
        radius, depth = rng.uniform(0.3, 0.5), rng.uniform(-0.2, 0.1)

        def sdf(p: np.ndarray) -> np.ndarray:
            wall = np.abs(np.linalg.norm(p - (0, 0, radius + depth), axis=-1) - radius) - t / 2
            return np.maximum(wall, p[..., 2] - depth - 0.5 * radius)

    else:
        half = rng.uniform(0.25, 0.45, 2)
        bend = rng.uniform(-1.5, 1.5, 2)

        def sdf(p: np.ndarray) -> np.ndarray:
            surface = bend[0] * p[..., 0] ** 2 + bend[1] * p[..., 1] ** 2
            slab = np.abs(p[..., 2] - surface) - t / 2
            edge = np.maximum(np.abs(p[..., 0]) - half[0], np.abs(p[..., 1]) - half[1])
            return np.maximum(slab, edge)

    return surface_nets(sdf, resolution=80)


def creature(rng: np.random.Generator) -> Mesh:
    """A body with a head, four legs and a tail, blended into one smooth animal-like shape."""
    body = rng.uniform([0.2, 0.1, 0.1], [0.32, 0.17, 0.16])
    head_r = rng.uniform(0.07, 0.13)
    head = np.array([body[0] + 0.5 * head_r, 0, body[2] + rng.uniform(0.0, 0.12)])
    leg_r = rng.uniform(0.03, 0.06)
    leg_len = rng.uniform(0.15, 0.3)
    legs = [(np.array([sx * 0.6 * body[0], sy * 0.6 * body[1], 0]), np.array([sx * 0.65 * body[0], sy * 0.7 * body[1], -leg_len]))
            for sx in (-1, 1) for sy in (-1, 1)]  # fmt: skip
    tail = (np.array([-body[0], 0, 0.3 * body[2]]), np.array([-body[0] - rng.uniform(0.1, 0.25), 0, rng.uniform(0, 0.2)]))
    ears = rng.random() < 0.6
    k = rng.uniform(0.03, 0.07)

    def sdf(p: np.ndarray) -> np.ndarray:
        d = smooth_union(sd_ellipsoid(p, (0, 0, 0), body), sd_ellipsoid(p, head, (1.2 * head_r, head_r, head_r)), k)
        for a, b in legs:
            d = smooth_union(d, sd_capsule(p, a, b, leg_r), k)
        d = smooth_union(d, sd_capsule(p, *tail, 0.6 * leg_r), k)
        if ears:
            for side in (-1, 1):
                tip = head + (0, side * 0.6 * head_r, 1.4 * head_r)
                d = smooth_union(d, sd_capsule(p, head, tip, 0.3 * head_r), 0.5 * k)
        return d

    return surface_nets(sdf)


def furniture(rng: np.random.Generator) -> Mesh:
    """A chair, a table or a lamp from boards, legs and a shade."""
    kind = str(rng.choice(["chair", "table", "lamp"]))
    if kind == "lamp":
        base, pole_h, shade_r = rng.uniform(0.1, 0.2), rng.uniform(0.3, 0.5), rng.uniform(0.15, 0.25)

        def lamp(p: np.ndarray) -> np.ndarray:
            d = sd_cylinder_z(p, (0, 0, -0.45), base, 0.03)
            d = np.minimum(d, sd_cylinder_z(p, (0, 0, -0.45 + pole_h / 2), 0.02, pole_h / 2))
            z = p[..., 2] - (-0.45 + pole_h)  # the shade: a thin open cone around the top of the pole
            r = np.hypot(p[..., 0], p[..., 1])
            cone = np.abs(r - (shade_r - 0.5 * z)) * 0.9 - 0.012
            return np.minimum(d, np.maximum(cone, np.abs(z - 0.08) - 0.09))

        return surface_nets(lamp, resolution=80)
    top = np.array([rng.uniform(0.2, 0.4), rng.uniform(0.2, 0.4), rng.uniform(0.015, 0.04)])
    height = rng.uniform(0.25, 0.45)
    leg = rng.uniform(0.015, 0.04)
    round_legs = rng.random() < 0.5
    back = kind == "chair"

    def sdf(p: np.ndarray) -> np.ndarray:
        d = sd_box(p, (0, 0, 0), top)
        for sx in (-1, 1):
            for sy in (-1, 1):
                foot = (sx * (top[0] - 2 * leg), sy * (top[1] - 2 * leg), -height / 2)
                part = sd_cylinder_z(p, foot, leg, height / 2) if round_legs else sd_box(p, foot, (leg, leg, height / 2))
                d = np.minimum(d, part)
        if back:
            d = np.minimum(d, sd_box(p, (-top[0] + top[2], 0, height / 2), (top[2], top[1], height / 2)))
        return d

    return surface_nets(sdf, resolution=80)


FAMILIES: dict[str, Callable[[np.random.Generator], Mesh]] = {
    "primitive": primitive,
    "blob": blob,
    "revolution": revolution,
    "mechanical": mechanical,
    "shell": shell,
    "creature": creature,
    "furniture": furniture,
}
TRAIN_FAMILIES = ("primitive", "blob", "revolution", "mechanical", "shell")
HELD_OUT_FAMILIES = ("creature", "furniture")


# ----------------------------------------------------------------------------------------------
# Scenes and cameras
# ----------------------------------------------------------------------------------------------


@dataclass
class Part:
    """One shape of a scene: a family's mesh, or (`asset` ≥ 0) a mesh the engine supplies (an
    imported asset file, a bank mesh), with its placement."""

    label: str  # family name, or "asset"
    mesh: Mesh | None  # None for an asset
    asset: int  # index into the engine's assets, -1 for a family shape
    scale: np.ndarray  # (3,) applied after fitting the part into a unit box
    rotation: np.ndarray  # (3, 3)
    offset: np.ndarray  # (3,)


def draw_parts(
    rng: np.random.Generator,
    families: tuple[str, ...] = TRAIN_FAMILIES,
    assets: int = 0,
    shape: Callable[[str], Mesh] | None = None,
) -> list[Part]:
    """One to three parts; with `assets` > 0 each part is an asset with probability 1/2. `shape(family)`
    makes a family's mesh (default: a fresh one from `rng`; the torch stream reuses recent ones)."""
    count = int(rng.choice([1, 1, 1, 2, 2, 3]))
    parts = []
    for _ in range(count):
        if assets and rng.random() < 0.5:
            label, mesh, asset = "asset", None, int(rng.integers(assets))
        else:
            label = str(rng.choice(families))
            mesh, asset = (shape(label) if shape else FAMILIES[label](rng)), -1
        offset = rng.uniform(-0.6, 0.6, 3) if count > 1 else np.zeros(3)
        parts.append(Part(label, mesh, asset, rng.uniform(0.6, 1.4, 3), random_rotation(rng), offset))
    return parts


def assemble(parts: list[Part], meshes: list[Mesh]) -> list[Mesh]:
    """Place each part's mesh (`meshes[i]` for part i: its own, or the resolved asset) in the world:
    fitted into a unit box, scaled, rotated, offset, and the whole group scaled into the object
    sphere (radius OBJECT_RADIUS at the origin). Degenerate meshes are left out."""
    placed = []
    for part, (v, f) in zip(parts, meshes, strict=True):
        size = np.ptp(v, axis=0).max() if len(v) else 0.0
        if len(f) == 0 or size < 1e-9:
            continue
        v = (v - 0.5 * (v.min(0) + v.max(0))) / size
        placed.append(((v * part.scale) @ part.rotation.T + part.offset, f))
    if not placed:
        return []
    allv = np.concatenate([v for v, _ in placed])
    centre = 0.5 * (allv.min(0) + allv.max(0))
    scale = OBJECT_RADIUS / np.linalg.norm(allv - centre, axis=1).max()
    return [((v - centre) * scale, f) for v, f in placed]


def object_camera(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
    """Camera position, viewing direction and horizontal field of view (30–70°) framing the object
    sphere so that it spans 55–90 % of the frame, from anywhere above slightly below the horizon."""
    fov = math.radians(rng.uniform(30.0, 70.0))
    distance = OBJECT_RADIUS / math.sin(0.5 * fov * rng.uniform(0.55, 0.9))
    elevation, azimuth = rng.uniform(-0.5, 1.1), rng.uniform(0, 2 * math.pi)
    position = distance * np.array(
        [math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth), math.sin(elevation)]
    )
    return position, rng.normal(0, 0.05, 3) - position, fov


def look_rotation(direction: np.ndarray) -> np.ndarray:
    """World-to-camera rotation (rows: the OpenCV camera's right, down and forward axes in world space)
    for a camera looking along `direction` with world +z up."""
    forward = direction / np.linalg.norm(direction)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right = right / max(np.linalg.norm(right), 1e-6)
    return np.stack([right, np.cross(forward, right), forward])
