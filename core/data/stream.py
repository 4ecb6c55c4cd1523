"""Ground truth made on the fly in torch (CPU or CUDA), no Blender and no disk: for training at scale.

Scenes follow the shared recipe (core/data/recipe.py: the same shape families, placement and
cameras as the Blender engine), optionally mixed with a bank of meshes exported once from
Blender (`python -m core bank`), traced with the multi-hit tracer (core/geometry/raytrace.py) and
shaded with a sun (cast shadows through the same tracer), specular highlights, ambient light and
random albedo with procedural textures. `SceneStream.batch` returns what `ShardReader.batch` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..geometry.points import pixel_rays, ray_distance_to_points
from ..geometry.raytrace import occluded_along, trace_camera
from .recipe import FAMILIES, TRAIN_FAMILIES, assemble, draw_parts, look_rotation, object_camera
from .recipe import Mesh as RecipeMesh
from .shards import BACKGROUND

MAX_REDRAWS = 32  # scenes drawn for one sample before the stream gives up (none visible)
POOL_SIZE = 16  # meshes kept per shape family for reuse


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted vertex normals [V, 3] of a triangle mesh (verts [V, 3], faces [F, 3])."""
    tri = verts[faces]
    n = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    out = torch.zeros_like(verts).index_add_(0, faces.flatten(), n.repeat_interleave(3, 0))
    return out / out.norm(dim=-1, keepdim=True).clamp_min(1e-12)


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


# ----------------------------------------------------------------------------------------------
# Scenes, cameras, shading
# ----------------------------------------------------------------------------------------------

@dataclass
class StreamConfig:
    resolution: int = 128  # square image side
    layers: int = 6  # ray crossings kept per pixel
    bank: str | None = None  # .npz mesh bank from `python -m core bank` (mixed with the recipe's families)
    families: tuple[str, ...] = TRAIN_FAMILIES  # shape families of core/data/recipe.py drawn from
    mesh_reuse: int = 4  # scenes a meshed shape appears in, on average (new pose, scale, camera and colours each time)
    device: str = "cpu"

    def __post_init__(self) -> None:
        unknown = set(self.families) - set(FAMILIES)
        if unknown or not self.families:
            raise ValueError(f"unknown shape families {sorted(unknown)}; choose from {sorted(FAMILIES)}")
        if self.mesh_reuse < 1:
            raise ValueError(f"mesh_reuse must be at least 1, got {self.mesh_reuse}")


def load_bank(path: str | Path) -> list[RecipeMesh]:
    """Meshes of a bank file: `vertices` (N, 3) float, `faces` (M, 3) int, `vertex_offsets`/`face_offsets` (K+1,)."""
    with np.load(path, allow_pickle=False) as f:
        v, fa, vo, fo = f["vertices"], f["faces"], f["vertex_offsets"], f["face_offsets"]
    return [(v[vo[i] : vo[i + 1]].astype(np.float64), fa[fo[i] : fo[i + 1]].astype(np.int64)) for i in range(len(vo) - 1)]


class SceneStream:
    """Random object scenes of the shared recipe, traced and shaded on the fly; `batch(B)` → the training batch dict."""

    def __init__(self, cfg: StreamConfig, seed: int = 0):
        self.cfg = cfg
        self.device = torch.device(cfg.device)
        self.rng = np.random.default_rng(seed)
        self.bank = load_bank(cfg.bank) if cfg.bank else []
        self.pool: dict[str, list[RecipeMesh]] = {family: [] for family in cfg.families}

    def shape(self, family: str) -> RecipeMesh:
        """A mesh of `family`: a fresh one with probability 1/mesh_reuse (or while the family's pool of
        POOL_SIZE is filling), otherwise one of the pool's — meshing costs far more than tracing."""
        pool, rng = self.pool[family], self.rng
        if len(pool) < POOL_SIZE or rng.random() < 1 / self.cfg.mesh_reuse:
            mesh = FAMILIES[family](rng)
            if len(pool) < POOL_SIZE:
                pool.append(mesh)
            else:
                pool[int(rng.integers(POOL_SIZE))] = mesh
            return mesh
        return pool[int(rng.integers(POOL_SIZE))]

    def random_scene(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """World-space vertices [V, 3], faces [F, 3] and per-face part id [F] of one recipe scene
        (bank meshes stand in for the recipe's assets); empty when every part was degenerate."""
        parts = draw_parts(self.rng, self.cfg.families, assets=len(self.bank), shape=self.shape)
        placed = assemble(parts, [p.mesh if p.mesh is not None else self.bank[p.asset] for p in parts])
        offsets = np.cumsum([0] + [len(v) for v, _ in placed])
        verts = torch.from_numpy(np.concatenate([v for v, _ in placed] or [np.zeros((0, 3))])).float()
        faces = torch.from_numpy(np.concatenate([f + o for (_, f), o in zip(placed, offsets)] or [np.zeros((0, 3), np.int64)]))
        owner = torch.cat([torch.full((len(f),), i) for i, (_, f) in enumerate(placed)] or [torch.zeros(0, dtype=torch.long)])
        return verts, faces, owner

    def sample(self) -> dict[str, torch.Tensor]:
        """One traced and shaded scene: rgb [H, W, 3] float, alpha [H, W], distance [L, H, W], intrinsics [3, 3].

        A scene the camera sees nothing of (possible when a thin part is seen edge-on) is redrawn."""
        cfg, dev = self.cfg, self.device
        R = cfg.resolution
        for _ in range(MAX_REDRAWS):
            verts, faces, owner = self.random_scene()
            position, direction, fov = object_camera(self.rng)
            if len(faces) == 0:
                continue
            rot = torch.from_numpy(look_rotation(direction)).float()
            f = 0.5 * R / math.tan(0.5 * fov)
            K = torch.tensor([[f, 0, R / 2], [0, f, R / 2], [0, 0, 1.0]], device=dev)
            cam_verts = ((verts - torch.from_numpy(position).float()) @ rot.T).to(dev)
            faces, owner = faces.to(dev), owner.to(dev)
            distance, index = trace_camera(cam_verts, faces, K, R, R, cfg.layers)
            if (index[0] >= 0).any():
                rgb = self.shade(cam_verts, faces, owner, K, distance[0], index[0], rot.to(dev))
                return {"rgb": rgb, "alpha": (index[0] >= 0).float(), "distance": distance, "intrinsics": K}
        raise RuntimeError(f"no visible scene in {MAX_REDRAWS} draws (families {self.cfg.families})")

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
