"""Ground truth made on the fly in torch (CPU or CUDA), no Blender and no disk: for training at scale.

Scenes follow the shared recipe (core/data/recipe.py: the same shape families, placement and
cameras as the Blender engine; in scene mode core/data/layouts.py: the same rooms and streets),
optionally mixed with a bank of meshes exported once from Blender (`python -m core bank`), traced
with the multi-hit tracer (core/geometry/raytrace.py) and shaded with a sun (cast shadows through
the same tracer), a room's lamp, specular highlights, ambient light and random albedo with
procedural textures; scenes show a sky where no surface is. `SceneStream.batch` returns what
`ShardReader.batch` does; with `frames` > 1 it returns clips for dynamic mode: object scenes
animated by core/data/motion.py, every frame traced (image [B, T, 3, H, W], points [B, T·L, H, W, 3]).
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
from .motion import camera_path, draw_motions, moved
from .recipe import FAMILIES, TRAIN_FAMILIES, assemble, draw_parts, look_rotation, object_camera
from .recipe import Mesh as RecipeMesh
from .shards import BACKGROUND

MAX_REDRAWS = 32  # scenes drawn for one sample before the stream gives up (none visible)
POOL_SIZE = 16  # meshes kept per shape family for reuse
CLIP_NOISE = 0.01  # std of the sensor noise added to every frame of a clip (frames of a still clip differ)


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted vertex normals [V, 3] of a triangle mesh (verts [V, 3], faces [F, 3])."""
    tri = verts[faces]
    n = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    out = torch.zeros_like(verts).index_add_(0, faces.flatten(), n.repeat_interleave(3, 0))
    return out / out.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def barycentric(points: torch.Tensor, verts: torch.Tensor, tri_faces: torch.Tensor) -> torch.Tensor:
    """Barycentric weights [N, 3] of `points` [N, 3] on their triangles (tri_faces [N, 3] vertex indices)."""
    a, b, c = verts[tri_faces].unbind(1)
    v0, v1, v2 = b - a, c - a, points - a
    d00, d01, d11 = (v0 * v0).sum(-1), (v0 * v1).sum(-1), (v1 * v1).sum(-1)
    d20, d21 = (v2 * v0).sum(-1), (v2 * v1).sum(-1)
    denom = (d00 * d11 - d01 * d01).clamp_min(1e-20)
    w1, w2 = (d11 * d20 - d01 * d21) / denom, (d00 * d21 - d01 * d20) / denom
    return torch.stack([1 - w1 - w2, w1, w2], -1)


def smooth_normals(weights: torch.Tensor, tri_faces: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
    """Vertex normals [V, 3] interpolated with barycentric `weights` [N, 3] on triangles tri_faces [N, 3]."""
    n = (weights[..., None] * normals[tri_faces]).sum(1)
    return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def merged(meshes: list[RecipeMesh]) -> RecipeMesh:
    """One mesh (vertices (V, 3), faces (F, 3)) of several, faces renumbered."""
    offsets = np.cumsum([0] + [len(v) for v, _ in meshes])
    return np.concatenate([v for v, _ in meshes]), np.concatenate(
        [f + o for (_, f), o in zip(meshes, offsets[:-1], strict=True)]
    )


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
    frames: int = 1  # T: frames per sample; T > 1 draws animated object clips (dynamic mode)
    motion: str | None = None  # clips: one kind of motion for all (core/data/motion.py), None: drawn per clip

    def __post_init__(self) -> None:
        if self.mode not in ("object", "scene"):
            raise ValueError(f"mode must be 'object' or 'scene', got {self.mode!r}")
        if self.frames < 1 or (self.frames > 1 and self.mode != "object"):
            raise ValueError(f"frames must be at least 1, and clips (frames > 1) are object scenes; got {self.frames}")
        unknown = set(self.families) - set(FAMILIES)
        if unknown or not self.families:
            raise ValueError(f"unknown shape families {sorted(unknown)}; choose from {sorted(FAMILIES)}")
        if self.mesh_reuse < 1:
            raise ValueError(f"mesh_reuse must be at least 1, got {self.mesh_reuse}")


def load_bank(path: str | Path) -> list[RecipeMesh]:
    """Meshes of a bank file: `vertices` (N, 3) float, `faces` (M, 3) int, `vertex_offsets`/`face_offsets` (K+1,)."""
    with np.load(path, allow_pickle=False) as f:
        v, fa, vo, fo = f["vertices"], f["faces"], f["vertex_offsets"], f["face_offsets"]
    return [
        (v[vo[i] : vo[i + 1]].astype(np.float64), fa[fo[i] : fo[i + 1]].astype(np.int64)) for i in range(len(vo) - 1)
    ]


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
        """One traced and shaded scene: rgb [H, W, 3] float, alpha [H, W], distance [L, H, W], intrinsics [3, 3];
        with cfg.frames = T > 1 a clip (`sample_clip`): rgb [T, H, W, 3], alpha [T, H, W], distance [T, L, H, W].

        Objects have alpha 1 where they are hit; scenes are opaque (sky where nothing is hit). A scene
        the camera sees nothing of (possible when a thin part is seen edge-on) is redrawn."""
        if self.cfg.frames > 1:
            return self.sample_clip()
        for _ in range(MAX_REDRAWS):
            meshes, camera, lamp = self.random_scene()
            if meshes and (frame := self.render(meshes, camera, lamp, self.rng)) is not None:
                return frame
        raise RuntimeError(f"no visible scene in {MAX_REDRAWS} draws (families {self.cfg.families})")

    def sample_clip(self) -> dict[str, torch.Tensor]:
        """An object scene animated over cfg.frames frames (`core/data/motion.py`), every frame traced
        and shaded with the same materials and sun, plus a little sensor noise (CLIP_NOISE) per frame;
        redrawn when a frame shows nothing."""
        T = self.cfg.frames
        for _ in range(MAX_REDRAWS):
            meshes, camera, _ = self.random_scene()
            if not meshes:
                continue
            motions = draw_motions(self.rng, meshes, self.cfg.motion)
            path = camera_path(self.rng, camera, T, still=motions[0].kind == "static")
            shading_seed = int(self.rng.integers(2**31))
            rest = merged(meshes)[0]  # where textures sit: the first frame's vertices
            frames = []
            for t in range(T):
                posed = [moved(mesh, motion, t) for mesh, motion in zip(meshes, motions, strict=True)]
                frame = self.render(posed, path[t], None, np.random.default_rng(shading_seed), rest=rest)
                if frame is None:
                    break
                frames.append(frame)
            if len(frames) == T:
                clip = {k: torch.stack([f[k] for f in frames]) for k in ("rgb", "alpha", "distance")}
                noise = torch.from_numpy(self.rng.normal(0.0, CLIP_NOISE, clip["rgb"].shape)).float()
                clip["rgb"] = (clip["rgb"] + noise.to(self.device)).clamp(0, 1)
                return clip | {"intrinsics": frames[0]["intrinsics"]}
        raise RuntimeError(f"no visible clip in {MAX_REDRAWS} draws (families {self.cfg.families})")

    def render(
        self,
        meshes: list[RecipeMesh],
        camera: Camera,
        lamp: np.ndarray | None,
        rng: np.random.Generator,
        rest: np.ndarray | None = None,
    ) -> dict[str, torch.Tensor] | None:
        """`sample`'s dict for world-space meshes seen by `camera`, shaded with draws from `rng`
        (None when nothing is hit); textures follow the vertices' `rest` positions (default: as given)."""
        cfg, dev = self.cfg, self.device
        R = cfg.resolution
        position, direction, fov = camera
        verts, faces = merged(meshes)
        owner = torch.cat([torch.full((len(f),), i) for i, (_, f) in enumerate(meshes)]).to(dev)
        rot = torch.from_numpy(look_rotation(direction)).float()
        f = 0.5 * R / math.tan(0.5 * fov)
        K = torch.tensor([[f, 0, R / 2], [0, f, R / 2], [0, 0, 1.0]], device=dev)
        cam_verts = ((torch.from_numpy(verts - position).float()) @ rot.T).to(dev)
        faces_t = torch.from_numpy(faces).to(dev)
        distance, index = trace_camera(cam_verts, faces_t, K, R, R, cfg.layers)
        if not (index[0] >= 0).any():
            return None
        cam_lamp = None if lamp is None else (torch.from_numpy(lamp - position).float() @ rot.T).to(dev)
        rest_t = torch.from_numpy(verts if rest is None else rest).float().to(dev)
        rgb = self.shade(cam_verts, faces_t, owner, K, distance[0], index[0], rot.to(dev), rng, rest_t, cam_lamp)
        alpha = torch.ones(R, R, device=dev) if cfg.mode == "scene" else (index[0] >= 0).float()
        return {"rgb": rgb, "alpha": alpha, "distance": distance, "intrinsics": K}

    def shade(self, verts, faces, owner, K, depth0, tri0, world_to_cam, rng, rest, lamp=None) -> torch.Tensor:
        """Layer-0 colours [H, W, 3]: albedo × texture, ambient + sun (with cast shadows) + a lamp at
        camera-space `lamp` [3] (unshadowed, when given) + specular; in scene mode a sky where nothing is hit.
        Random draws come from `rng`; the texture is a function of the hit's position on the vertices at
        `rest` [V, 3] (world space), so it stays on a surface that moves."""
        dev = self.device
        H, W = depth0.shape
        hit = tri0 >= 0
        rays = pixel_rays(K, H, W)
        points = ray_distance_to_points(depth0, rays)[hit]  # [N, 3] camera space
        tri = faces[tri0[hit]]  # [N, 3]
        weights = barycentric(points, verts, tri)
        n = smooth_normals(weights, tri, vertex_normals(verts, faces))
        surface = (weights[..., None] * rest[tri]).sum(1)  # [N, 3] where each hit sits on the rest pose
        view = -points / points.norm(dim=-1, keepdim=True)
        n = torch.where(((n * view).sum(-1, keepdim=True) < 0), -n, n)  # face the viewer
        objects = int(owner.max()) + 1
        albedo = torch.from_numpy(rng.uniform(0.15, 0.95, (objects, 3))).float().to(dev)[owner[tri0[hit]]]
        freq = torch.from_numpy(rng.uniform(4, 14, (objects, 3))).float().to(dev)[owner[tri0[hit]]]
        pattern = torch.sin(surface * freq).prod(-1)  # stripes/checks fixed on the surface
        if rng.random() < 0.5:
            second = torch.from_numpy(rng.uniform(0.15, 0.95, 3)).float().to(dev)
            albedo = torch.where((pattern > 0)[:, None], albedo, second)
        elevation, azimuth = rng.uniform(0.3, 1.4), rng.uniform(0, 2 * math.pi)
        sun_world = torch.tensor(
            [math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth), math.sin(elevation)]
        )
        sun = sun_world.to(dev) @ world_to_cam.T
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
            lamp_light = (n * to_lamp).sum(-1, keepdim=True).clamp_min(0) / to_lamp.norm(
                dim=-1, keepdim=True
            ).clamp_min(1e-6)
            colour = colour + albedo * lamp_light * falloff * rng.uniform(0.4, 1.0)
        rgb = torch.zeros(H, W, 3, device=dev)
        if self.cfg.mode == "scene":
            blue = rng.uniform(0.0, 1.0)
            rgb[:] = torch.tensor([0.55 + 0.35 * (1 - blue), 0.65 + 0.25 * (1 - blue), 0.9], device=dev)
        rgb[hit] = colour.clamp(0, 1) ** (1 / 2.2)
        return rgb

    def batch(self, batch_size: int, num_layers: int | None = None) -> dict[str, torch.Tensor]:
        """`batch_size` fresh samples as ShardReader.batch gives them (image composited on grey); clips
        (cfg.frames = T > 1) as image [B, T, 3, H, W], points [B, T·L, H, W, 3], valid [B, T·L, H, W]
        (frame-major), foreground [B, T, H, W]."""
        L = num_layers or self.cfg.layers
        T, R = self.cfg.frames, self.cfg.resolution
        samples = [self.sample() for _ in range(batch_size)]
        rgb = torch.stack([s["rgb"] for s in samples]).reshape(batch_size, T, R, R, 3)
        alpha = torch.stack([s["alpha"] for s in samples]).reshape(batch_size, T, R, R, 1)
        image = (rgb * alpha + BACKGROUND.to(rgb.device) * (1 - alpha)).permute(0, 1, 4, 2, 3).contiguous()
        distance = torch.stack([s["distance"].reshape(T, -1, R, R)[:, :L] for s in samples]).flatten(1, 2)
        intrinsics = torch.stack([s["intrinsics"] for s in samples])
        points = ray_distance_to_points(distance, pixel_rays(intrinsics, R, R)[:, None])
        valid = distance > 0
        if T == 1:
            return {
                "image": image[:, 0],
                "points": points,
                "valid": valid,
                "foreground": valid[:, 0],
                "intrinsics": intrinsics,
            }
        foreground = valid[:, ::L]  # [B, T, H, W]: layer 0 of every frame
        return {"image": image, "points": points, "valid": valid, "foreground": foreground, "intrinsics": intrinsics}
