"""`python -m core generate`: render ground-truth shards with worker processes, each its own Blender.

Sample i of a run is a pure function of (seed, i): its random generator is seeded with
(seed, i, attempt), where attempt counts redraws of scenes that had to be skipped. Shards that
already exist are skipped, so an interrupted run resumes where it stopped. With --num-shards N,
a run writes only the shards s with s % N == --shard-index, so N machines (a Slurm array, an
indexed Kubernetes job) write disjoint parts of one data set into one shared folder.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import write_atomic
from .motion import MOTIONS
from .recipe import FAMILIES, TRAIN_FAMILIES
from .shards import shard_path, write_shard

log = logging.getLogger("core.generate")
MAX_ATTEMPTS = 8  # redraws of one sample before the run fails


@dataclass
class GenerateConfig:
    out: str  # folder for the shards, dataset.json, generate.log and preview.png
    count: int  # number of samples
    seed: int = 0  # run seed; sample i depends on (seed, i) only
    resolution: int = 128  # square image side in pixels
    mode: str = "object"  # "object" (transparent background) or "scene" (a room or a street, core/data/layouts.py)
    layers: int = 6  # ray crossings kept per pixel (at most 8)
    frames: int = 1  # > 1: animated clips of this many frames (object mode, `core/data/motion.py`)
    motion: str | None = None  # clips: every clip's kind of motion (default: drawn per clip)
    assets: str | None = None  # folder searched for .obj/.ply/.glb/.gltf/.blend meshes (object mode)
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)  # Blender processes
    shard_size: int = 32  # samples per shard file
    render_samples: int = 32  # Cycles samples per pixel
    families: list[str] = field(default_factory=lambda: list(TRAIN_FAMILIES))  # shape families (object mode)
    shard_index: int = 0  # this machine's part of the data set: shards s with s % num_shards == shard_index
    num_shards: int = 1  # machines sharing the data set

    def __post_init__(self) -> None:
        if self.mode not in ("object", "scene"):
            raise ValueError(f"mode must be 'object' or 'scene', got {self.mode!r}")
        if not 1 <= self.layers <= 8:
            raise ValueError(f"layers must be between 1 and 8, got {self.layers}")
        if self.frames < 1 or (self.frames > 1 and self.mode != "object"):
            raise ValueError(f"frames must be 1, or more for object clips; got {self.frames} in {self.mode} mode")
        if self.motion is not None and (self.frames == 1 or self.motion not in MOTIONS):
            raise ValueError(f"motion {self.motion!r} needs clips (frames > 1) and one of {', '.join(MOTIONS)}")
        if self.count < 1 or self.resolution < 8 or self.workers < 1:
            raise ValueError("count and workers must be positive and resolution at least 8")
        if not 0 <= self.shard_index < self.num_shards:
            raise ValueError(f"shard index must lie in [0, {self.num_shards}), got {self.shard_index}")
        unknown = sorted(set(self.families) - set(FAMILIES))
        if unknown or not self.families:
            raise ValueError(f"unknown shape families {unknown}; choose from {sorted(FAMILIES)}")

    def dataset_fields(self) -> dict:
        """Settings that must match for a run to resume into an existing folder."""
        return {k: v for k, v in asdict(self).items() if k not in ("out", "workers", "count", "shard_index", "num_shards")}


def make_sample(cfg: GenerateConfig, index: int, assets: list, threads: int, log_lines: list[str]) -> dict:
    """Build, render and trace sample `index` in this process's Blender; redraw skipped scenes.
    A clip (cfg.frames > 1) stacks its frames' arrays on a frame axis after the sample axis, with one
    intrinsics matrix (the lens does not change)."""
    from .recipe import object_camera
    from .scenes import add_camera, build_layout_scene, build_object_scene, render_clip, reset_scene
    from .tracing import SkipSample, render_and_trace

    for attempt in range(MAX_ATTEMPTS):
        rng = np.random.default_rng([cfg.seed, index, attempt])
        try:
            scene = cfg.mode == "scene"  # scenes show their sky; objects stand on a transparent background
            reset_scene(cfg.resolution, cfg.render_samples, threads, transparent=not scene, denoise=scene)
            if cfg.mode == "object":
                meta, objects = build_object_scene(rng, assets, log_lines, tuple(cfg.families))
                camera = object_camera(rng)
            else:
                meta, camera = build_layout_scene(rng)
            add_camera(*camera)
            if cfg.frames == 1:
                frames = [render_and_trace(cfg.layers, log_lines)]
            else:
                frames, motion = render_clip(rng, objects, camera, cfg.frames, cfg.layers, log_lines, cfg.motion)
                meta = dict(meta, motion=motion)
        except SkipSample as e:
            log_lines.append(f"sample {index} attempt {attempt}: skipped, {e}")
            continue
        sample = {
            "rgb": [s.rgba[..., :3] for s in frames], "alpha": [s.rgba[..., 3] for s in frames],
            "distance": [s.distance for s in frames], "cam_to_world": [s.cam_to_world for s in frames],
        }
        return {k: np.stack(v) if cfg.frames > 1 else v[0] for k, v in sample.items()} | {
            "intrinsics": frames[0].intrinsics, "index": np.int64(index),
            "meta": dict(meta, attempt=attempt, fov_deg=float(np.degrees(camera[2]))),
        }
    raise RuntimeError(f"sample {index}: no valid scene in {MAX_ATTEMPTS} attempts")


def _init_worker() -> None:
    """Prepare a spawned worker before it first imports bpy.

    A parent that already imported bpy hands its sys.path down, with Blender's scripts folders
    whose pure-Python `bpy` package would shadow the real module: drop those. Then send the
    worker's C-level stdout (Blender's per-render chatter) to /dev/null; stderr stays.
    """
    sys.path[:] = [p for p in sys.path if not re.search(r"[/\\](bpy|blender)[/\\].*scripts([/\\]|$)", p)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)


def _render_shard(job: tuple[dict, int, list[str], int]) -> tuple[int, int, list[str]]:
    """Worker entry point (runs in a spawned process): render one shard and write it."""
    cfg_dict, shard, assets, threads = job
    cfg = GenerateConfig(**cfg_dict)
    first = shard * cfg.shard_size
    indices = range(first, min(first + cfg.shard_size, cfg.count))
    lines: list[str] = []
    samples = [make_sample(cfg, i, [Path(a) for a in assets], threads, lines) for i in indices]
    meta = dict(cfg.dataset_fields(), generator="world-tracing blender v3", samples=[s.pop("meta") for s in samples])
    write_shard(shard_path(cfg.out, shard), samples, meta)
    return shard, len(samples), lines


def generate(cfg: GenerateConfig, progress: bool = True) -> int:
    """Render every missing shard of `cfg` with `cfg.workers` Blender processes; returns samples written."""
    from tqdm import tqdm

    from .scenes import find_assets

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = out / "dataset.json"
    if settings.exists():
        old = json.loads(settings.read_text())
        if old != cfg.dataset_fields():
            raise ValueError(f"{out} holds a dataset made with other settings {old}; use another --out")
    else:  # several machines may start at once: each writes the same settings, atomically
        text = json.dumps(cfg.dataset_fields(), indent=1)
        write_atomic(settings, lambda fh: fh.write(text.encode()))
    assets = [str(p) for p in find_assets(cfg.assets)]
    if cfg.assets and not assets:
        log.warning("no .obj/.ply/.glb/.gltf/.blend files under %s; using primitives only", cfg.assets)
    shards = -(-cfg.count // cfg.shard_size)
    mine = [s for s in range(shards) if s % cfg.num_shards == cfg.shard_index]
    todo = [s for s in mine if not shard_path(out, s).exists()]
    threads = max(1, (os.cpu_count() or 1) // cfg.workers)
    jobs = [(asdict(cfg), s, assets, threads) for s in todo]
    size = {s: min(cfg.shard_size, cfg.count - s * cfg.shard_size) for s in mine}
    done_before = sum(size.values()) - sum(size[s] for s in todo)
    written = 0
    with open(out / "generate.log", "a") as logfile, \
            tqdm(total=sum(size.values()), initial=done_before, unit="sample", disable=not progress, desc="generate") as bar:
        if not jobs:
            return 0
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(min(cfg.workers, len(jobs)), initializer=_init_worker, maxtasksperchild=8) as pool:
            for shard, n, lines in pool.imap_unordered(_render_shard, jobs):
                for line in lines:
                    logfile.write(f"shard {shard}: {line}\n")
                    log.info("shard %d: %s", shard, line)
                written += n
                bar.update(n)
    return written
