"""Shared fixtures: an isolated Blender (the bpy module), reset around each test that asks for it."""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
# The released-model specification and reference vectors travel with the tests (a copy of
# ../shared/interop); WT_INTEROP points the tests at another copy.
INTEROP = Path(os.environ.get("WT_INTEROP", DATA / "interop"))

# Blender reads and writes user configuration (extensions, preferences) here: keep tests away from
# any real user folder. Must be set before bpy is first imported. The extension installed there holds
# torch (about 1 GB): removed when the test run ends.
if "BLENDER_USER_RESOURCES" not in os.environ:
    os.environ["BLENDER_USER_RESOURCES"] = tempfile.mkdtemp(prefix="wt-blender-user-")
    atexit.register(shutil.rmtree, os.environ["BLENDER_USER_RESOURCES"], ignore_errors=True)
sys.path.insert(0, str(ROOT))


# Tests that use Blender in this process are marked `blender` through their fixtures; tests that start
# Blender in a subprocess carry the mark themselves. `make test-fast` leaves out `blender` and `slow`.
BLENDER_FIXTURES = {"blender", "bpy", "bpy_ext", "installed", "user_zip"}


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if BLENDER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.blender)


@pytest.fixture
def blender():
    """The bpy module with an empty factory scene, reset again afterwards."""
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    yield bpy
    bpy.ops.wm.read_factory_settings(use_empty=True)


@pytest.fixture(scope="session")
def interop() -> Path:
    """tests/data/interop (or $WT_INTEROP): the released-model specification and reference vectors."""
    if not (INTEROP / "tiny_io.safetensors").is_file():
        pytest.fail(f"reference vectors not found in {INTEROP}; set WT_INTEROP to the interop folder")
    return INTEROP


def free_port() -> int:
    """A TCP port nothing listens on now (for a process group's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_python(args: list[str], processes: int = 1, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python ARGS` from the repository root (under torchrun with `processes` > 1, on a free port),
    one thread per process; output captured."""
    launcher = ["-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port", str(free_port())]
    cmd = [sys.executable, *(launcher if processes > 1 else []), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def small_config():
    """A WT-DiT small enough to sample in milliseconds on a CPU (structure as in `tiny`)."""
    from core.model.encoder import EncoderConfig
    from core.model.wtdit import WTDiTConfig

    return WTDiTConfig(
        image_size=32,
        patch_size=8,
        num_layers=4,
        dim=32,
        num_heads=2,
        depth=3,
        head_depth=3,
        layerscale_init=0.5,
        encoder=EncoderConfig(embed_dim=32, depth=2, num_heads=2, pos_grid=4, num_features=2, frozen=False),
    )


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory) -> Path:
    """A seeded small model with random (non-zero) output weights, saved as one of our checkpoints."""
    import torch

    from core.geometry.points import PointNormalization
    from core.model.checkpoint import save_checkpoint
    from core.model.wtdit import WTDiT

    torch.manual_seed(0)
    model = WTDiT(small_config())
    torch.nn.init.normal_(model.head.out.weight, std=0.05)
    path = tmp_path_factory.mktemp("checkpoint") / "small.safetensors"
    save_checkpoint(path, model.state_dict(), model.cfg, PointNormalization("zscore"), {"name": "random small"})
    return path


def plane_points(depth, focal: float = 10.0):
    """(H, W, 3) float32 points at per-pixel `depth` (H, W) along pinhole rays through pixel centres
    (focal length `focal` px, principal point at the image centre)."""
    import numpy as np

    H, W = depth.shape
    v, u = np.mgrid[0:H, 0:W] + 0.5
    rays = np.stack([(u - W / 2) / focal, (v - H / 2) / focal, np.ones((H, W))], axis=-1)
    return (rays * depth[..., None]).astype(np.float32)


FRONT, BACK, RAMP = 1.0, 3.0, (1.5, 2.0, 2.5)  # the depths of `step_edge_map`


def step_edge_map(block: int = 1):
    """A one-layer map of a depth edge, 8×16 pixels each repeated block×block (a nearest-neighbour upsample):
    a front plane at z = FRONT over the left 6 columns, a back plane at z = BACK over the right 7, and between
    them the columns of depths RAMP a bilinear resampling makes there (flying pixels)."""
    import numpy as np

    from core.layered import LayeredPointMap

    depth = np.repeat(np.array([FRONT] * 6 + list(RAMP) + [BACK] * 7)[None], 8, axis=0)
    depth = np.repeat(np.repeat(depth, block, axis=0), block, axis=1)
    H, W = depth.shape
    focal = 10.0 * block
    K = np.array([[focal, 0, W / 2], [0, focal, H / 2], [0, 0, 1]], np.float32)
    image = np.full((H, W, 3), 128, np.uint8)
    return LayeredPointMap(plane_points(depth, focal)[None], np.ones((1, H, W), bool), K, image)


def write_samples(folder: Path, samples: list[dict], mode: str, shard_size: int) -> Path:
    """Shards of samples (rgb, alpha, distance, intrinsics; an identity camera pose and their order as
    index added) in `folder`, `shard_size` per file."""
    import numpy as np

    from core.data.shards import shard_path, write_shard

    for i, sample in enumerate(samples):
        sample |= {"cam_to_world": np.eye(4, dtype=np.float32), "index": np.int64(i)}
    for s in range(0, len(samples), shard_size):
        write_shard(shard_path(folder, s // shard_size), samples[s : s + shard_size], {"mode": mode, "samples": []})
    return folder


def write_sphere_shards(folder: Path, count: int, resolution: int = 32, seed: int = 0, shard_size: int = 4) -> Path:
    """Shards of analytic spheres (enter and exit crossings per ray), shaded by their normals."""
    import numpy as np

    rng = np.random.default_rng(seed)
    R = resolution
    f = R / (2 * np.tan(np.radians(25)))
    K = np.array([[f, 0, R / 2], [0, f, R / 2], [0, 0, 1]], np.float32)
    v, u = np.mgrid[0:R, 0:R] + 0.5
    rays = np.stack([(u - R / 2) / f, (v - R / 2) / f, np.ones((R, R))], -1)
    rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
    samples = []
    for _ in range(count):
        centre, radius = np.array([*rng.uniform(-0.15, 0.15, 2), rng.uniform(1.6, 2.2)]), rng.uniform(0.3, 0.5)
        b = rays @ centre
        disc = b**2 - (centre @ centre - radius**2)
        hit = disc > 0
        near, far = b - np.sqrt(np.maximum(disc, 0)), b + np.sqrt(np.maximum(disc, 0))
        distance = np.zeros((6, R, R), np.float32)
        distance[0][hit], distance[1][hit] = near[hit], far[hit]
        normal = (rays * near[..., None] - centre) / radius
        shade = np.clip(0.3 + 0.7 * -normal[..., 2], 0, 1)
        rgb = (shade[..., None] * rng.uniform(0.4, 1.0, 3) * 255).astype(np.uint8)
        samples.append({"rgb": rgb, "alpha": (hit * 255).astype(np.uint8), "distance": distance, "intrinsics": K})
    return write_samples(folder, samples, "object", shard_size)


def train_anchor_net(init: Path, data: Path, val: Path, out: Path, steps: int, eval_every: int):
    """`train-surface` from `init` with the tests' small settings (width 8, batch 8); returns its config,
    the trained model and its card, after checking that every weight `init` had came through unchanged."""
    import torch

    from core.model.loading import load_model
    from core.train.surface import SurfaceTrainConfig, train_surface

    cfg = SurfaceTrainConfig(
        init=str(init), data=[str(data)], val=[str(val)], out=str(out),
        width=8, steps=steps, batch_size=8, lr=3e-3, warmup=5, eval_every=eval_every, threads=1,
    )  # fmt: skip
    train_surface(cfg, log=lambda _: None)
    model, _, card = load_model(cfg.out)
    base, _, _ = load_model(init)
    for name, tensor in base.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], tensor)
    return cfg, model, card


def write_corner_shards(folder: Path, count: int, resolution: int = 32, seed: int = 0, shard_size: int = 4) -> Path:
    """Scene shards of a room's corner: a floor 1–2 below an eye-level camera and a back wall 3–8 ahead
    (depth from both planes, exact), each in its own random colour, shaded by distance."""
    import numpy as np

    rng = np.random.default_rng(seed)
    R = resolution
    f = R / (2 * np.tan(np.radians(30)))
    K = np.array([[f, 0, R / 2], [0, f, R / 2], [0, 0, 1]], np.float32)
    v, u = np.mgrid[0:R, 0:R] + 0.5
    rays = np.stack([(u - R / 2) / f, (v - R / 2) / f, np.ones((R, R))], -1)  # z = 1
    length = np.linalg.norm(rays, axis=-1)
    samples = []
    for _ in range(count):
        height, wall = rng.uniform(1.0, 2.0), rng.uniform(3.0, 8.0)
        floor_depth = np.where(rays[..., 1] > 1e-6, height / np.maximum(rays[..., 1], 1e-6), np.inf)
        depth = np.minimum(floor_depth, wall)  # [R, R] along z
        on_floor = floor_depth < wall
        colour = np.where(on_floor[..., None], rng.uniform(0.3, 1.0, 3), rng.uniform(0.3, 1.0, 3))
        shade = np.clip(1.2 - depth / 10, 0.2, 1)[..., None]
        distance = np.zeros((4, R, R), np.float32)
        distance[0] = depth * length  # along the unit ray
        samples.append(
            {
                "rgb": (colour * shade * 255).astype(np.uint8),
                "alpha": np.full((R, R), 255, np.uint8),
                "distance": distance,
                "intrinsics": K,
            }
        )
    return write_samples(folder, samples, "scene", shard_size)


# ----------------------------------------------------------------------------------------------
# The extension installed from its zip into this process's Blender
# ----------------------------------------------------------------------------------------------

MODULE = "bl_ext.user_default.world_tracing"
SAMPLE = DATA / "object_rgba.png"  # a small RGBA object image


@pytest.fixture(scope="session")
def extension_zip(tmp_path_factory):
    """The linux-x64 extension zip, built and validated by wheels/build.py."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, str(ROOT / "wheels" / "build.py"), "--out", str(out)], check=True)
    return next((out / "cp311").glob("world_tracing-*-linux_x64.zip"))


@pytest.fixture(scope="session")
def installed(extension_zip, random_checkpoint):
    """Install the zip into the (temporary) user extension repository, enabled, using the test model."""
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    result = bpy.ops.extensions.package_install_files(
        filepath=str(extension_zip), repo="user_default", enable_on_install=True, overwrite=True
    )
    assert result == {"FINISHED"}
    return sys.modules[MODULE]


@pytest.fixture
def bpy_ext(installed, random_checkpoint):
    """bpy with the extension enabled, the test model chosen and an empty scene; reset afterwards."""
    import bpy

    bpy.ops.wm.read_homefile(use_empty=True)
    prefs = bpy.context.preferences.addons[MODULE].preferences
    prefs.checkpoint, prefs.device = str(random_checkpoint), "cpu"
    scene = bpy.context.scene
    scene.world_tracing.output = "BOTH"
    yield bpy
    bpy.ops.wm.read_homefile(use_empty=True)


def datablock_counts(bpy) -> dict[str, int]:
    return {
        k: len(getattr(bpy.data, k))
        for k in ("objects", "meshes", "materials", "images", "cameras", "collections", "actions", "node_groups")
    }


def trace(bpy, path=SAMPLE, **kwargs):
    return bpy.ops.world_tracing.trace_image(filepath=str(path), **kwargs)


def result_collection(bpy):
    return bpy.context.scene.world_tracing.result
