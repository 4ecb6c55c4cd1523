"""Ground truth made on the fly in torch (CPU or CUDA), no Blender and no disk: for training at scale.

Scenes are built from meshes in memory — procedural primitives with random deformations, and a
bank of meshes exported once from Blender (`python -m core bank`) — framed by the same random
cameras as the Blender engine, traced with the multi-hit tracer (core/raytrace.py) and shaded
with a sun (cast shadows through the same tracer), specular highlights, ambient light and random
albedo with procedural textures. `SceneStream.batch` returns what `ShardReader.batch` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..geometry.points import pixel_rays, ray_distance_to_points
from ..geometry.raytrace import occluded_along, trace_camera
from .scenes import OBJECT_RADIUS
from .shards import BACKGROUND

Mesh = tuple[torch.Tensor, torch.Tensor]  # vertices [V, 3] float, faces [F, 3] long


# ----------------------------------------------------------------------------------------------
# Procedural meshes (about unit size, centred, counter-clockwise outward faces)
# ----------------------------------------------------------------------------------------------

def grid_faces(rows: int, cols: int, wrap: bool) -> torch.Tensor:
    """Two triangles per cell of a rows × cols vertex grid, columns wrapping around if `wrap`."""
    r, c = torch.meshgrid(torch.arange(rows - 1), torch.arange(cols if wrap else cols - 1), indexing="ij")
    a, b = r * cols + c, r * cols + (c + 1) % cols
    d, e = a + cols, b + cols
    return torch.cat([torch.stack([a, d, b], -1).reshape(-1, 3), torch.stack([b, d, e], -1).reshape(-1, 3)])


def surface_of_revolution(profile_r: torch.Tensor, profile_z: torch.Tensor, segments: int, caps: bool) -> Mesh:
    """Revolve a (r, z) profile about z; optional flat caps closing both ends."""
    phi = torch.arange(segments) * (2 * math.pi / segments)
    v = torch.stack([profile_r[:, None] * phi.cos(), profile_r[:, None] * phi.sin(), profile_z[:, None].expand(-1, segments)], -1)
    verts, faces = v.reshape(-1, 3), grid_faces(len(profile_r), segments, wrap=True)
    if caps:
        n = len(verts)
        verts = torch.cat([verts, torch.tensor([[0, 0, float(profile_z[0])], [0, 0, float(profile_z[-1])]])])
        ring = torch.arange(segments)
        bottom = torch.stack([torch.full_like(ring, n), (ring + 1) % segments, ring], -1)
        top_ring = ring + (len(profile_r) - 1) * segments
        top = torch.stack([torch.full_like(ring, n + 1), top_ring, (ring + 1) % segments + (len(profile_r) - 1) * segments], -1)
        faces = torch.cat([faces, bottom, top])
    return verts, faces


def primitive(kind: str, rng: np.random.Generator) -> Mesh:
    """sphere, box, cylinder, tube (open), cone, torus or plane, dense enough to deform smoothly."""
    n = 32
    if kind == "sphere":
        theta = torch.linspace(0.02, math.pi - 0.02, n)
        return surface_of_revolution(0.5 * theta.sin(), -0.5 * theta.cos(), 2 * n, caps=True)
    if kind in ("cylinder", "tube"):
        return surface_of_revolution(torch.full((n,), 0.4), torch.linspace(-0.5, 0.5, n), 2 * n, caps=kind == "cylinder")
    if kind == "cone":
        z = torch.linspace(-0.5, 0.5, n)
        return surface_of_revolution(0.5 - (0.5 - rng.uniform(0.0, 0.3)) * (z + 0.5), z, 2 * n, caps=True)
    if kind == "torus":
        minor = rng.uniform(0.08, 0.2)
        a = torch.arange(n) * (2 * math.pi / n)
        b = torch.arange(2 * n) * (math.pi / n)
        r = 0.4 + minor * a.cos()[:, None]
        v = torch.stack([r * b.cos(), r * b.sin(), (minor * a.sin())[:, None].expand(-1, 2 * n)], -1)
        return v.reshape(-1, 3), torus_faces(n, 2 * n)
    if kind == "plane":
        g = torch.linspace(-0.5, 0.5, n)
        y, x = torch.meshgrid(g, g, indexing="ij")
        return torch.stack([x, y, torch.zeros_like(x)], -1).reshape(-1, 3), grid_faces(n, n, wrap=False)
    if kind == "box":
        return box_mesh(torch.zeros(3), torch.ones(3), subdivisions=8)
    raise ValueError(f"unknown primitive {kind!r}")


def torus_faces(rings: int, segments: int) -> torch.Tensor:
    """Two triangles per cell of a grid wrapping in both directions."""
    r, c = torch.meshgrid(torch.arange(rings), torch.arange(segments), indexing="ij")
    a, b = r * segments + c, r * segments + (c + 1) % segments
    d, e = ((r + 1) % rings) * segments + c, ((r + 1) % rings) * segments + (c + 1) % segments
    return torch.cat([torch.stack([a, b, d], -1).reshape(-1, 3), torch.stack([b, e, d], -1).reshape(-1, 3)])


def box_mesh(centre: torch.Tensor, size: torch.Tensor, subdivisions: int = 1) -> Mesh:
    """An axis-aligned box from six subdivided faces (outward winding)."""
    g = torch.linspace(-0.5, 0.5, subdivisions + 1)
    s, t = torch.meshgrid(g, g, indexing="ij")
    quad = grid_faces(subdivisions + 1, subdivisions + 1, wrap=False)
    verts: list[torch.Tensor] = []
    faces: list[torch.Tensor] = []
    for axis in range(3):
        for sign in (-1.0, 1.0):
            u, w = (axis + 1) % 3, (axis + 2) % 3
            p = torch.zeros(s.numel(), 3)
            p[:, axis], p[:, u], p[:, w] = sign * 0.5, s.flatten(), t.flatten()
            f = quad if sign > 0 else quad.flip(1)
            faces.append(f + sum(v.shape[0] for v in verts))
            verts.append(p)
    return torch.cat(verts) * size + centre, torch.cat(faces)


# ----------------------------------------------------------------------------------------------
# Deformations
# ----------------------------------------------------------------------------------------------

def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    tri = verts[faces]
    n = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    out = torch.zeros_like(verts).index_add_(0, faces.flatten(), n.repeat_interleave(3, 0))
    return out / out.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def deform(mesh: Mesh, rng: np.random.Generator) -> tuple[Mesh, list[str]]:
    """Random displacement (sum of sinusoids along normals), twist/bend/taper, shells and cuts."""
    v, f = mesh
    applied = []
    if rng.random() < 0.4:
        normals = vertex_normals(v, f)
        k = torch.from_numpy(rng.normal(0, 1, (6, 3)) * rng.uniform(2, 9)).float()
        phase = torch.from_numpy(rng.uniform(0, 2 * math.pi, 6)).float()
        bump = torch.sin(v @ k.T + phase).mean(1, keepdim=True)
        v = v + rng.uniform(0.03, 0.12) * bump * normals
        applied.append("displace")
    if rng.random() < 0.35:
        axis = int(rng.integers(3))
        other = [a for a in range(3) if a != axis]
        s = v[:, axis]
        kind = rng.choice(["twist", "bend", "taper"])
        if kind == "twist":
            angle = s * rng.uniform(-3, 3)
            x, y = v[:, other[0]], v[:, other[1]]
            v = v.clone()
            v[:, other[0]], v[:, other[1]] = x * angle.cos() - y * angle.sin(), x * angle.sin() + y * angle.cos()
        elif kind == "taper":
            v = v.clone()
            scale = 1 + rng.uniform(-0.8, 0.8) * s
            v[:, other[0]] *= scale
            v[:, other[1]] *= scale
        else:
            v = v.clone()
            v[:, other[0]] = v[:, other[0]] + rng.uniform(-0.8, 0.8) * s ** 2
        applied.append(str(kind))
    if rng.random() < 0.3:  # a shell: an inner surface facing inwards (the solidify modifier's result)
        inner = v - rng.uniform(0.03, 0.1) * vertex_normals(v, f)
        f = torch.cat([f, f.flip(1) + len(v)])
        v = torch.cat([v, inner])
        applied.append("shell")
    if rng.random() < 0.35:  # cut away what lies beyond a random plane (opens shells, shows insides)
        n = torch.from_numpy(rng.normal(size=3)).float()
        n = n / n.norm()
        keep = (v[f].mean(1) @ n) < rng.uniform(0.0, 0.3)
        if keep.sum() > 0.3 * len(f):
            f = f[keep]
            applied.append("cut")
    return (v, f), applied


def smooth_normals(points: torch.Tensor, verts: torch.Tensor, tri_faces: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
    """Vertex normals interpolated at `points` [N, 3] (barycentric on their triangles [N, 3] indices)."""
    a, b, c = verts[tri_faces].unbind(1)
    v0, v1, v2 = b - a, c - a, points - a
    d00, d01, d11 = (v0 * v0).sum(-1), (v0 * v1).sum(-1), (v1 * v1).sum(-1)
    d20, d21 = (v2 * v0).sum(-1), (v2 * v1).sum(-1)
    denom = (d00 * d11 - d01 * d01).clamp_min(1e-20)
    w1, w2 = (d11 * d20 - d01 * d21) / denom, (d00 * d21 - d01 * d20) / denom
    n = normals[tri_faces]  # [N, 3, 3]
    n = (1 - w1 - w2)[:, None] * n[:, 0] + w1[:, None] * n[:, 1] + w2[:, None] * n[:, 2]
    return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def random_rotation(rng: np.random.Generator) -> torch.Tensor:
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return torch.tensor([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                         [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                         [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]], dtype=torch.float32)


# ----------------------------------------------------------------------------------------------
# Scenes, cameras, shading
# ----------------------------------------------------------------------------------------------

@dataclass
class StreamConfig:
    resolution: int = 128  # square image side
    layers: int = 6  # ray crossings kept per pixel
    bank: str | None = None  # .npz mesh bank from `python -m core bank` (mixed with primitives)
    bank_fraction: float = 0.5  # share of objects drawn from the bank when one is given
    device: str = "cpu"


def load_bank(path: str | Path) -> list[Mesh]:
    """Meshes of a bank file: `vertices` (N, 3) float, `faces` (M, 3) int, `vertex_offsets`/`face_offsets` (K+1,)."""
    with np.load(path, allow_pickle=False) as f:
        v, fa, vo, fo = f["vertices"], f["faces"], f["vertex_offsets"], f["face_offsets"]
    return [(torch.from_numpy(v[vo[i]:vo[i + 1]].astype(np.float32)), torch.from_numpy(fa[fo[i]:fo[i + 1]].astype(np.int64)))
            for i in range(len(vo) - 1)]


class SceneStream:
    """Random object scenes traced and shaded on the fly; `batch(B)` → the training batch dict."""

    KINDS = ("sphere", "box", "cylinder", "tube", "cone", "torus", "plane")

    def __init__(self, cfg: StreamConfig, seed: int = 0):
        self.cfg = cfg
        self.device = torch.device(cfg.device)
        self.rng = np.random.default_rng(seed)
        self.bank = load_bank(cfg.bank) if cfg.bank else []

    def random_object(self) -> tuple[Mesh, str]:
        rng = self.rng
        if self.bank and rng.random() < self.cfg.bank_fraction:
            i = int(rng.integers(len(self.bank)))
            return self.bank[i], f"bank{i}"
        kind = str(rng.choice(self.KINDS))
        mesh, applied = deform(primitive(kind, rng), rng)
        return mesh, "+".join([kind, *applied])

    def random_scene(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """World-space vertices, faces and per-face object id of 1–3 objects in the object sphere."""
        rng = self.rng
        count = int(rng.choice([1, 1, 1, 2, 2, 3]))
        verts: list[torch.Tensor] = []
        faces: list[torch.Tensor] = []
        owner: list[torch.Tensor] = []
        for i in range(count):
            (v, f), _ = self.random_object()
            v = v - 0.5 * (v.amin(0) + v.amax(0))
            v = v / (v.amax(0) - v.amin(0)).max().clamp_min(1e-6)
            v = (v * torch.from_numpy(rng.uniform(0.6, 1.4, 3)).float()) @ random_rotation(rng).T
            if count > 1:
                v = v + torch.from_numpy(rng.uniform(-0.6, 0.6, 3)).float()
            faces.append(f + sum(x.shape[0] for x in verts))
            verts.append(v)
            owner.append(torch.full((len(f),), i))
        v, f = torch.cat(verts), torch.cat(faces)
        centre = 0.5 * (v.amin(0) + v.amax(0))
        v = (v - centre) * (OBJECT_RADIUS / (v - centre).norm(dim=1).max())
        return v, f, torch.cat(owner)

    def random_camera(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        """World-to-camera rotation [3, 3], camera position [3] and horizontal FOV framing the object
        sphere (the Blender engine's rules)."""
        rng = self.rng
        fov = math.radians(rng.uniform(30.0, 70.0))
        distance = OBJECT_RADIUS / math.sin(0.5 * fov * rng.uniform(0.55, 0.9))
        elevation, azimuth = rng.uniform(-0.5, 1.1), rng.uniform(0, 2 * math.pi)
        position = distance * torch.tensor([math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth),
                                            math.sin(elevation)])
        forward = torch.from_numpy(rng.normal(0, 0.05, 3)).float() - position
        forward = forward / forward.norm()
        right = torch.linalg.cross(forward, torch.tensor([0.0, 0.0, 1.0]))
        right = right / right.norm().clamp_min(1e-6)
        down = torch.linalg.cross(forward, right)
        return torch.stack([right, down, forward]), position, fov  # rows: OpenCV camera axes in world

    def sample(self) -> dict[str, torch.Tensor]:
        """One traced and shaded scene: rgb [H, W, 3] float, alpha [H, W], distance [L, H, W], intrinsics [3, 3]."""
        cfg, dev = self.cfg, self.device
        R = cfg.resolution
        verts, faces, owner = self.random_scene()
        rot, position, fov = self.random_camera()
        f = 0.5 * R / math.tan(0.5 * fov)
        K = torch.tensor([[f, 0, R / 2], [0, f, R / 2], [0, 0, 1.0]])
        cam_verts = ((verts - position) @ rot.T).to(dev)
        faces, owner = faces.to(dev), owner.to(dev)
        distance, index = trace_camera(cam_verts, faces, K.to(dev), R, R, cfg.layers)
        rgb = self.shade(cam_verts, faces, owner, K.to(dev), distance[0], index[0], rot.to(dev))
        return {"rgb": rgb, "alpha": (index[0] >= 0).float(), "distance": distance, "intrinsics": K.to(dev)}

    def shade(self, verts, faces, owner, K, depth0, tri0, world_to_cam) -> torch.Tensor:
        """Layer-0 colours [H, W, 3]: albedo × texture, ambient + sun (with cast shadows) + specular."""
        rng, dev = self.rng, self.device
        H, W = depth0.shape
        hit = tri0 >= 0
        rays = pixel_rays(K, H, W)
        points = ray_distance_to_points(depth0, rays)[hit]  # [N, 3] camera space
        n = smooth_normals(points, verts, faces[tri0[hit]], vertex_normals(verts, faces))
        view = -points / points.norm(dim=-1, keepdim=True)
        n = torch.where(((n * view).sum(-1, keepdim=True) < 0), -n, n)  # face the viewer
        objects = int(owner.max()) + 1
        albedo = torch.from_numpy(rng.uniform(0.15, 0.95, (objects, 3))).float().to(dev)[owner[tri0[hit]]]
        freq = torch.from_numpy(rng.uniform(4, 14, (objects, 3))).float().to(dev)[owner[tri0[hit]]]
        pattern = torch.sin((points @ world_to_cam) * freq).prod(-1)  # object-space stripes/checks
        if rng.random() < 0.5:
            second = torch.from_numpy(rng.uniform(0.15, 0.95, 3)).float().to(dev)
            albedo = torch.where((pattern > 0)[:, None], albedo, second)
        elevation, azimuth = rng.uniform(0.3, 1.4), rng.uniform(0, 2 * math.pi)
        sun_world = torch.tensor([math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth), math.sin(elevation)])
        sun = (sun_world.to(dev) @ world_to_cam.T)
        lit = (~occluded_along(points, sun, verts, faces)).float()[:, None]
        diffuse = (n @ sun).clamp_min(0)[:, None]
        half = sun + view
        half = half / half.norm(dim=-1, keepdim=True)
        specular = (n * half).sum(-1).clamp_min(0)[:, None] ** rng.uniform(10, 80) * rng.uniform(0.0, 0.6)
        ambient, strength = rng.uniform(0.15, 0.45), rng.uniform(0.6, 1.1)
        colour = albedo * (ambient + strength * diffuse * lit) + specular * lit
        rgb = torch.zeros(H, W, 3, device=dev)
        rgb[hit] = colour.clamp(0, 1) ** (1 / 2.2)
        return rgb

    def batch(self, batch_size: int, num_layers: int | None = None) -> dict[str, torch.Tensor]:
        """`batch_size` fresh samples as ShardReader.batch gives them (image composited on grey)."""
        L = num_layers or self.cfg.layers
        samples = [self.sample() for _ in range(batch_size)]
        rgb = torch.stack([s["rgb"] for s in samples])
        alpha = torch.stack([s["alpha"] for s in samples])[..., None]
        image = (rgb * alpha + BACKGROUND.to(rgb.device) * (1 - alpha)).permute(0, 3, 1, 2).contiguous()
        distance = torch.stack([s["distance"][:L] for s in samples])
        intrinsics = torch.stack([s["intrinsics"] for s in samples])
        R = self.cfg.resolution
        points = ray_distance_to_points(distance, pixel_rays(intrinsics, R, R)[:, None])
        valid = distance > 0
        return {"image": image, "points": points, "valid": valid, "foreground": valid[:, 0], "intrinsics": intrinsics}
