"""A bank of meshes exported once from the Blender engine, for the torch stream (`python -m core bank`).

Each entry is one random object scene of the Blender engine (modifiers, boolean cuts and assets
applied), as world-space triangles inside the object sphere. Runs in Blender (bpy imported inside
the functions); the file is plain numpy, a few MB, and needs no Blender to read.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..atomic import write_atomic


def export_bank(out: str | os.PathLike, count: int, seed: int = 0, assets: str | None = None,
                max_faces: int = 20000, progress: bool = True) -> int:
    """Build `count` object scenes and write their evaluated triangles to `out` (.npz); returns entries kept.

    Scenes with more than `max_faces` triangles are skipped to keep the bank small.
    """
    from tqdm import tqdm

    from .scenes import build_object_scene, find_assets, reset_scene
    from .tracing import SkipSample, scene_triangles

    asset_files = find_assets(assets)
    verts, faces = [], []
    for i in tqdm(range(count), desc="bank", disable=not progress):
        rng = np.random.default_rng([seed, i])
        reset_scene(16, 1, 1, transparent=True)
        try:
            build_object_scene(rng, asset_files, [])
            v, f = scene_triangles([])
        except SkipSample:
            continue
        if len(f) <= max_faces:
            verts.append(v.astype(np.float32))
            faces.append(f.astype(np.int32))
    if not verts:
        raise RuntimeError("no scene fitted in the bank (raise max_faces?)")
    arrays = {"vertices": np.concatenate(verts), "faces": np.concatenate(faces),
              "vertex_offsets": np.cumsum([0] + [len(v) for v in verts]), "face_offsets": np.cumsum([0] + [len(f) for f in faces])}
    write_atomic(Path(out), lambda fh: np.savez_compressed(fh, **arrays))
    return len(verts)
