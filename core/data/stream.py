"""Ground truth made on the fly in torch (CPU or CUDA), no Blender and no disk: for training at scale.

Scenes follow the shared recipe (core/data/recipe.py: the same shape families, placement and
cameras as the Blender engine; in scene mode core/data/layouts.py: the same rooms and streets),
optionally mixed with a bank of meshes exported once from Blender (`python -m core bank`), traced
with the multi-hit tracer (core/geometry/raytrace.py) and shaded with a sun (cast shadows through
the same tracer), a room's lamp, specular highlights, ambient light and random albedo with
procedural textures; scenes show a sky where no surface is. `SceneStream.batch` returns what
`ShardReader.batch` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..geometry.points import pixel_rays, ray_distance_to_points
from ..geometry.raytrace import occluded_along, trace_camera
from .layouts import Camera, scene_layout
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


def merged(meshes: list[RecipeMesh]) -> RecipeMesh:
    """One mesh (vertices (V, 3), faces (F, 3)) of several, faces renumbered."""
    offsets = np.cumsum([0] + [len(v) for v, _ in meshes])
    return np.concatenate([v for v, _ in meshes]), np.concatenate([f + o for (_, f), o in zip(meshes, offsets[:-1], strict=True)])


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
    mode: str = "object"  # "object" (recipe parts on a background) or "scene" (rooms and streets under a sky)

    def __post_init__(self) -> None:
        if self.mode not in ("object", "scene"):
            raise ValueError(f"mode must be 'object' or 'scene', got {self.mode!r}")
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
    """Random scenes of the shared recipe, traced and shaded on the fly; `batch(B)` → the training batch dict."""

    def __init__(self, cfg: StreamConfig, seed: int = 0):
        self.cfg = cfg
        self.device = torch.device(cfg.device)
        self.rng = np.random.default_rng(seed)
        self.bank = load_bank(cfg.bank) if cfg.bank else []
        self.pool: dict[str, list[RecipeMesh]] = {family: [] for family in cfg.families}

    def shape(self, family: str) -> RecipeMesh:
        """A mesh of `family`: a fresh one with probability 1/mesh_reuse (or while the family's pool of
        POOL_SIZE is filling), otherwise one of the pool's — meshing costs far more than tracing."""
        pool, rng = self.pool.setdefault(family, []), self.rng
        if len(pool) < POOL_SIZE or rng.random() < 1 / self.cfg.mesh_reuse:
            mesh = FAMILIES[family](rng)
            if len(pool) < POOL_SIZE:
                pool.append(mesh)
            else:
                pool[int(rng.integers(POOL_SIZE))] = mesh
            return mesh
        return pool[int(rng.integers(POOL_SIZE))]

    def random_scene(self) -> tuple[list[RecipeMesh], Camera, np.ndarray | None]:
        """World-space meshes of one recipe scene (bank meshes stand in for the recipe's assets; one
        mesh per material: a surface group or an assembly), its camera, and a room's lamp (or None)."""
        if self.cfg.mode == "scene":
            layout = scene_layout(self.rng, shape=self.shape)
            groups: dict[tuple[str, int], list[RecipeMesh]] = {}
            for piece in layout.pieces:
                groups.setdefault((piece.surface, piece.group), []).append(piece.mesh)
            return [merged(meshes) for meshes in groups.values()], layout.camera, layout.lamp
        parts = draw_parts(self.rng, self.cfg.families, assets=len(self.bank), shape=self.shape)
        placed = assemble(parts, [p.mesh if p.mesh is not None else self.bank[p.asset] for p in parts])
        return placed, object_camera(self.rng), None

    def sample(self) -> dict[str, torch.Tensor]:
        """One traced and shaded scene: rgb [H, W, 3] float, alpha [H, W], distance [L, H, W], intrinsics [3, 3].

        Objects have alpha 1 where they are hit; scenes are opaque (sky where nothing is hit). A scene
        the camera sees nothing of (possible when a thin part is seen edge-on) is redrawn."""
        cfg, dev = self.cfg, self.device
        R = cfg.resolution
        for _ in range(MAX_REDRAWS):
            meshes, (position, direction, fov), lamp = self.random_scene()
            if not meshes:
                continue
            verts, faces = merged(meshes)
            owner = torch.cat([torch.full((len(f),), i) for i, (_, f) in enumerate(meshes)]).to(dev)
            rot = torch.from_numpy(look_rotation(direction)).float()
            f = 0.5 * R / math.tan(0.5 * fov)
            K = torch.tensor([[f, 0, R / 2], [0, f, R / 2], [0, 0, 1.0]], device=dev)
            cam_verts = ((torch.from_numpy(verts - position).float()) @ rot.T).to(dev)
            faces_t = torch.from_numpy(faces).to(dev)
            distance, index = trace_camera(cam_verts, faces_t, K, R, R, cfg.layers)
            if (index[0] >= 0).any():
                cam_lamp = None if lamp is None else (torch.from_numpy(lamp - position).float() @ rot.T).to(dev)
                rgb = self.shade(cam_verts, faces_t, owner, K, distance[0], index[0], rot.to(dev), cam_lamp)
                alpha = torch.ones(R, R, device=dev) if cfg.mode == "scene" else (index[0] >= 0).float()
                return {"rgb": rgb, "alpha": alpha, "distance": distance, "intrinsics": K}
        raise RuntimeError(f"no visible scene in {MAX_REDRAWS} draws (families {self.cfg.families})")

    def shade(self, verts, faces, owner, K, depth0, tri0, world_to_cam, lamp=None) -> torch.Tensor:
        """Layer-0 colours [H, W, 3]: albedo × texture, ambient + sun (with cast shadows) + a lamp at
        camera-space `lamp` [3] (unshadowed, when given) + specular; in scene mode a sky where nothing is hit."""
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
        if lamp is not None:
            to_lamp = lamp - points
            falloff = 1.0 / (1.0 + (to_lamp.norm(dim=-1, keepdim=True) / 3.0) ** 2)
            lamp_light = (n * to_lamp).sum(-1, keepdim=True).clamp_min(0) / to_lamp.norm(dim=-1, keepdim=True).clamp_min(1e-6)
            colour = colour + albedo * lamp_light * falloff * rng.uniform(0.4, 1.0)
        rgb = torch.zeros(H, W, 3, device=dev)
        if self.cfg.mode == "scene":
            blue = rng.uniform(0.0, 1.0)
            rgb[:] = torch.tensor([0.55 + 0.35 * (1 - blue), 0.65 + 0.25 * (1 - blue), 0.9], device=dev)
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
