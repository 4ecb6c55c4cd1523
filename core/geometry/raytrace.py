"""A batched multi-hit ray tracer in torch (CPU or CUDA): every ray × triangle crossing, front to back.

Rays that share a projection — all pixel rays of one pinhole camera, or parallel shadow rays
toward a sun — are binned in 2-D: each ray falls in one tile, each triangle covers the tiles of its
projected bounding box, and only (ray, triangle) pairs that share a tile are intersected
(Möller–Trumbore). Work grows with the projected area of the triangles, not with rays × triangles.

Axes: R rays, F triangles, L layers.
"""

from __future__ import annotations

import torch

EPS = 1e-4  # crossings closer than this along a ray count once (shared edges, the Blender engine's re-cast offset)


def intersect(origins: torch.Tensor, directions: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
    """Distances t of pairwise ray/triangle crossings (Möller–Trumbore, edges included), +inf on a miss.

    origins, directions: [N, 3]; triangles: [N, 3, 3]. Returns [N].
    """
    a, b, c = triangles.unbind(dim=1)
    e1, e2 = b - a, c - a
    p = torch.cross(directions, e2, dim=-1)
    det = (e1 * p).sum(-1)
    inv = 1.0 / torch.where(det.abs() < 1e-12, torch.full_like(det, float("nan")), det)
    s = origins - a
    u = (s * p).sum(-1) * inv
    q = torch.cross(s, e1, dim=-1)
    v = (directions * q).sum(-1) * inv
    t = (e2 * q).sum(-1) * inv
    hit = (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)
    return torch.where(hit, t, torch.full_like(t, float("inf")))


def binned_pairs(
    ray_tile: torch.Tensor, tri_lo: torch.Tensor, tri_hi: torch.Tensor, tiles: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate (ray, triangle) index pairs that share a tile.

    ray_tile: [R] flat tile index of each ray (-1: none); tri_lo, tri_hi: [F, 2] inclusive (col, row)
    tile ranges of each triangle's projected box (lo > hi: covers nothing); tiles: (cols, rows).
    Returns (ray index [N], triangle index [N]).
    """
    device = ray_tile.device
    cols, rows = tiles
    lo = tri_lo.clamp(min=0)
    hi = torch.stack([tri_hi[:, 0].clamp(max=cols - 1), tri_hi[:, 1].clamp(max=rows - 1)], dim=1)
    extent = (hi - lo + 1).clamp(min=0)  # [F, 2]
    count = extent[:, 0] * extent[:, 1]  # tiles per triangle
    tri = torch.repeat_interleave(torch.arange(len(count), device=device), count)  # [T]
    k = torch.arange(len(tri), device=device) - torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
    tile = (lo[tri, 1] + k // extent[tri, 0]) * cols + lo[tri, 0] + k % extent[tri, 0]  # [T] flat tile ids

    order = torch.argsort(ray_tile)
    sorted_tiles = ray_tile[order]
    per_tile = torch.bincount(sorted_tiles[sorted_tiles >= 0], minlength=cols * rows)
    start = torch.cumsum(per_tile, 0) - per_tile + (sorted_tiles < 0).sum()
    n = per_tile[tile]  # rays in each (triangle, tile) pair's tile
    pair_tri = torch.repeat_interleave(tri, n)
    offset = torch.arange(len(pair_tri), device=device) - torch.repeat_interleave(torch.cumsum(n, 0) - n, n)
    pair_ray = order[torch.repeat_interleave(start[tile], n) + offset]
    return pair_ray, pair_tri


def gather_layers(
    ray: torch.Tensor, t: torch.Tensor, tri: torch.Tensor, num_rays: int, layers: int, eps: float = EPS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-ray sorted crossings → distance [L, R] (0 = none) and triangle index [L, R] (-1 = none).

    Crossings within `eps` of the previous kept one on the same ray are merged (shared edges).
    """
    device = t.device
    keep = torch.isfinite(t)
    ray, t, tri = ray[keep], t[keep], tri[keep]
    order = torch.argsort(t, stable=True)
    ray, t, tri = ray[order], t[order], tri[order]
    order = torch.argsort(ray, stable=True)  # by ray, then distance
    ray, t, tri = ray[order], t[order], tri[order]
    distinct = torch.ones_like(ray, dtype=torch.bool)
    distinct[1:] = (ray[1:] != ray[:-1]) | (t[1:] - t[:-1] > eps)
    ray, t, tri = ray[distinct], t[distinct], tri[distinct]
    first = torch.ones_like(ray, dtype=torch.bool)
    first[1:] = ray[1:] != ray[:-1]
    starts = torch.cumsum(first.long(), 0) - 1  # group id per crossing
    group_start = torch.nonzero(first).squeeze(1)
    rank = torch.arange(len(ray), device=device) - group_start[starts]
    ok = rank < layers
    distance = torch.zeros(layers, num_rays, device=device, dtype=t.dtype)
    index = torch.full((layers, num_rays), -1, device=device, dtype=torch.long)
    distance[rank[ok], ray[ok]] = t[ok]
    index[rank[ok], ray[ok]] = tri[ok]
    return distance, index


def trace_camera(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    intrinsics: torch.Tensor,
    height: int,
    width: int,
    layers: int,
    tile: int = 8,
    eps: float = EPS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """All crossings of the pixel-centre rays of a pinhole camera with a mesh in its camera frame.

    vertices [V, 3] in OpenCV camera space, faces [F, 3]; intrinsics [3, 3].
    Returns distance along each unit ray [L, H, W] (0 = none) and triangle index [L, H, W] (-1 = none).
    """
    device, dtype = vertices.device, vertices.dtype
    from .points import pixel_rays

    rays = pixel_rays(intrinsics.to(dtype), height, width).reshape(-1, 3)
    directions = rays / rays.norm(dim=-1, keepdim=True)
    cols, rows = -(-width // tile), -(-height // tile)
    r, c = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
    ray_tile = ((r // tile) * cols + c // tile).flatten()

    tri = vertices[faces]  # [F, 3, 3]
    z = tri[..., 2]
    front = z > 1e-6
    fx, fy, cx, cy = intrinsics[0, 0], intrinsics[1, 1], intrinsics[0, 2], intrinsics[1, 2]
    u = tri[..., 0] / z.clamp_min(1e-6) * fx + cx
    v = tri[..., 1] / z.clamp_min(1e-6) * fy + cy
    lo = torch.stack([u.amin(1), v.amin(1)], 1)
    hi = torch.stack([u.amax(1), v.amax(1)], 1)
    straddles = front.any(1) & ~front.all(1)  # crosses the camera plane: its projection is unbounded
    lo = torch.where(straddles[:, None], torch.zeros_like(lo), lo)
    hi = torch.where(straddles[:, None], torch.tensor([width, height], dtype=dtype, device=device).expand_as(hi), hi)
    tile_lo = torch.floor(lo / tile).long()
    tile_hi = torch.floor(hi / tile).long()
    behind = ~front.any(1)
    tile_hi[behind] = -1  # wholly behind the camera: no pixel ray reaches it
    pair_ray, pair_tri = binned_pairs(ray_tile, tile_lo, tile_hi, (cols, rows))
    origins = torch.zeros(len(pair_ray), 3, device=device, dtype=dtype)
    t = intersect(origins, directions[pair_ray], tri[pair_tri])
    distance, index = gather_layers(pair_ray, t, pair_tri, height * width, layers, eps)
    return distance.reshape(layers, height, width), index.reshape(layers, height, width)


def occluded_along(
    points: torch.Tensor,
    direction: torch.Tensor,
    vertices: torch.Tensor,
    faces: torch.Tensor,
    grid: int = 64,
    offset: float = 1e-3,
) -> torch.Tensor:
    """Is anything of the mesh hit from `points` [R, 3] along one shared unit `direction` [3]? → [R] bool.

    Parallel rays are binned in the plane perpendicular to `direction` (an orthographic shadow map).
    """
    device, dtype = points.device, points.dtype
    if len(points) == 0 or len(faces) == 0:
        return torch.zeros(len(points), dtype=torch.bool, device=device)
    d = direction / direction.norm()
    helper = torch.tensor([1.0, 0, 0] if abs(float(d[0])) < 0.9 else [0, 1.0, 0], device=device, dtype=dtype)
    e1 = torch.linalg.cross(d, helper)
    e1 = e1 / e1.norm()
    e2 = torch.linalg.cross(d, e1)
    plane = torch.stack([e1, e2], 1)  # [3, 2]
    tri = vertices[faces]  # [F, 3, 3]
    tri_uv = tri @ plane  # [F, 3, 2]
    ray_uv = points @ plane  # [R, 2]
    lo_all = torch.minimum(tri_uv.amin((0, 1)), ray_uv.amin(0))
    size = (torch.maximum(tri_uv.amax((0, 1)), ray_uv.amax(0)) - lo_all).max().clamp_min(1e-6) / grid * 1.0001
    ray_cell = torch.floor((ray_uv - lo_all) / size).long()
    ray_tile = ray_cell[:, 1] * grid + ray_cell[:, 0]
    tile_lo = torch.floor((tri_uv.amin(1) - lo_all) / size).long()
    tile_hi = torch.floor((tri_uv.amax(1) - lo_all) / size).long()
    pair_ray, pair_tri = binned_pairs(ray_tile, tile_lo, tile_hi, (grid, grid))
    origins = points[pair_ray] + offset * d
    t = intersect(origins, d.expand(len(pair_ray), 3), tri[pair_tri])
    hit = torch.zeros(len(points), dtype=torch.bool, device=device)
    hit[pair_ray[torch.isfinite(t)]] = True
    return hit
