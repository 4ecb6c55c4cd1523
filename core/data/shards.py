"""Ground-truth shards on disk and a fast in-memory reader that yields training batches.

A shard `shard_NNNNN.npz` holds N samples of one resolution and layer count:
  rgb (N, H, W, 3) uint8, alpha (N, H, W) uint8, distance (N, L, H, W) float16 (along the unit
  pixel ray, 0 = no crossing), intrinsics (N, 3, 3) float32, cam_to_world (N, 4, 4) float32
  (OpenCV camera), index (N,) int64 (global sample index), meta: JSON text (generator settings
  and one description per sample). Shards are written to a temporary file and renamed, so a
  shard that exists is complete.
Clip shards (`generate --frames T`) add a frame axis after the sample axis: rgb (N, T, H, W, 3),
alpha (N, T, H, W), distance (N, T, L, H, W), cam_to_world (N, T, 4, 4); one intrinsics per clip.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ..atomic import write_atomic
from ..imageio import BACKGROUND as IMAGE_BACKGROUND
from ..geometry.points import pixel_rays, ray_distance_to_points
from ..layered import LayeredPointMap

SHARD_KEYS = ("rgb", "alpha", "distance", "intrinsics", "cam_to_world", "index")
BACKGROUND = torch.tensor(IMAGE_BACKGROUND) / 255.0  # [3] grey the foreground is composited on, as in tracing


def shard_path(folder: str | os.PathLike, shard: int) -> Path:
    return Path(folder) / f"shard_{shard:05d}.npz"


def write_shard(path: Path, samples: list[dict], meta: dict) -> None:
    """Stack per-sample arrays (keys of SHARD_KEYS) and write them atomically."""
    arrays = {k: np.stack([s[k] for s in samples]) for k in SHARD_KEYS}
    arrays["distance"] = arrays["distance"].astype(np.float16)
    arrays["meta"] = np.array(json.dumps(meta))
    write_atomic(path, lambda f: np.savez_compressed(f, **arrays))


class ShardReader:
    """All shards of one or more folders, loaded into memory once.

    `batch(indices)` turns samples into tensors; `batches(batch_size, seed)` yields random
    batches forever; `layered(i)` gives one sample as a LayeredPointMap for evaluation.
    """

    def __init__(self, folders: str | os.PathLike | list):
        folders = [folders] if isinstance(folders, (str, os.PathLike)) else list(folders)
        files = sorted(p for f in folders for p in Path(f).glob("shard_*.npz"))
        if not files:
            raise FileNotFoundError(f"no shard_*.npz files in {', '.join(map(str, folders))}")
        parts: dict[str, list[np.ndarray]] = {k: [] for k in SHARD_KEYS}
        self.meta = []
        for path in files:
            with np.load(path, allow_pickle=False) as f:
                for k in SHARD_KEYS:
                    parts[k].append(f[k])
                self.meta.append(json.loads(str(f["meta"])))
        shapes = {p.shape[1:] for p in parts["distance"]}
        if len(shapes) != 1:
            raise ValueError(f"shards mix resolutions or layer counts: {sorted(shapes)}")
        self.rgb, self.alpha, self.distance, self.intrinsics, self.cam_to_world, self.index = (
            np.concatenate(parts[k]) for k in SHARD_KEYS)
        self.mode = self.meta[0].get("mode", "object")
        self.frames = self.distance.shape[1] if self.distance.ndim == 5 else 1  # frames per sample

    def __len__(self) -> int:
        return len(self.index)

    @property
    def num_layers(self) -> int:
        return self.distance.shape[-3]

    @property
    def resolution(self) -> tuple[int, int]:
        return self.distance.shape[-2], self.distance.shape[-1]

    def batch(self, indices: np.ndarray | list[int], num_layers: int | None = None) -> dict[str, torch.Tensor]:
        """Samples as tensors:

        image [B, 3, H, W] float in [0, 1] (composited on the background grey),
        points [B, L, H, W, 3] float camera space (zero where invalid), valid [B, L, H, W] bool,
        foreground [B, H, W] bool (layer 0 hit), intrinsics [B, 3, 3].
        `num_layers` keeps the first L layers (default: all). Clips as the torch stream gives them:
        image [B, T, 3, H, W], points [B, T·L, H, W, 3] and valid [B, T·L, H, W] (frame-major),
        foreground [B, T, H, W].
        """
        idx = np.asarray(indices)
        B, T, L = len(idx), self.frames, num_layers or self.num_layers
        H, W = self.resolution
        rgb = torch.from_numpy(self.rgb[idx]).float().reshape(B * T, H, W, 3) / 255.0
        alpha = torch.from_numpy(self.alpha[idx]).float().reshape(B * T, H, W, 1) / 255.0
        image = (rgb * alpha + BACKGROUND * (1 - alpha)).permute(0, 3, 1, 2).contiguous()  # [B·T, 3, H, W]
        distance = torch.from_numpy(self.distance[idx][..., :L, :, :].astype(np.float32)).reshape(B * T, L, H, W)
        intrinsics = torch.from_numpy(self.intrinsics[idx])  # [B, 3, 3]
        rays = pixel_rays(intrinsics.repeat_interleave(T, 0), H, W)[:, None]  # [B·T, 1, H, W, 3]
        valid = distance > 0
        points = ray_distance_to_points(distance, rays)  # [B·T, L, H, W, 3]
        if T == 1:
            return {"image": image, "points": points, "valid": valid, "foreground": valid[:, 0], "intrinsics": intrinsics}
        return {
            "image": image.unflatten(0, (B, T)),
            "points": points.reshape(B, T * L, H, W, 3),
            "valid": valid.reshape(B, T * L, H, W),
            "foreground": valid[:, 0].unflatten(0, (B, T)),
            "intrinsics": intrinsics,
        }

    def batches(self, batch_size: int, seed: int = 0, num_layers: int | None = None) -> Iterator[dict[str, torch.Tensor]]:
        """Random batches forever: each epoch a fresh permutation, seeded. ValueError when the data
        holds fewer samples than one batch (it would never yield)."""
        if not 1 <= batch_size <= len(self):
            raise ValueError(f"a batch of {batch_size} needs at least that many samples; the data has {len(self)}")
        rng = np.random.default_rng(seed)
        while True:
            order = rng.permutation(len(self))
            for start in range(0, len(order) - batch_size + 1, batch_size):
                yield self.batch(order[start:start + batch_size], num_layers)

    def layered(self, i: int, num_layers: int | None = None, frame: int = 0) -> LayeredPointMap:
        """Sample i (a clip's `frame`) as a LayeredPointMap (ground truth for evaluation and previews)."""
        b = self.batch([i], num_layers)
        L = b["points"].shape[1] // self.frames
        image = b["image"][0] if self.frames == 1 else b["image"][0, frame]
        points, valid = (b[k][0, frame * L : (frame + 1) * L].numpy() for k in ("points", "valid"))
        rgb = (image.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
        return LayeredPointMap(points, valid, b["intrinsics"][0].numpy(), rgb)
