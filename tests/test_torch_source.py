"""Where PyTorch comes from: the GPU build a driver gets, an existing environment checked, and the
install on request driven against a package index served on 127.0.0.1 from the wheels the zip
bundles (real files, real pip, the extension installed from its zip in a fresh Blender process)."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT, SAMPLE, free_port

import torch_source
from torch_source import Gpu, Install, gpu_build, installed_builds, site_packages


@pytest.mark.parametrize(
    "driver, build",
    [("581.15", "cu130"), ("575.51.03", "cu128"), ("570.26", "cu128"), ("561.09", "cu126"), ("535.104.05", "cu121")],
)
def test_the_newest_cuda_build_the_driver_runs_is_chosen(driver, build):
    assert gpu_build(Gpu("nvidia", ("NVIDIA RTX",), driver)) == build


@pytest.mark.parametrize(
    "gpu, message",
    [
        (Gpu("nvidia", ("old",), "470.82"), "older than any CUDA build"),
        (Gpu("apple", ("Apple silicon",)), "needs no GPU build"),
        (Gpu("none"), "no NVIDIA GPU"),
    ],
)
def test_no_build_is_offered_where_none_fits(gpu, message):
    with pytest.raises(ValueError, match=message):
        gpu_build(gpu)
    assert gpu_build(Gpu("amd", ("AMD GPU (ROCm)",))).startswith("rocm")


def fake_environment(root: Path, extension: str | None) -> Path:
    """A venv-shaped folder whose site-packages has a torch package with `extension` as its _C module."""
    packages = root / "lib" / "python3.11" / "site-packages"
    (packages / "torch").mkdir(parents=True)
    (packages / "torch" / "__init__.py").write_text("")
    if extension:
        (packages / "torch" / extension).write_bytes(b"")
    return packages


def test_an_environment_must_hold_a_torch_built_for_this_python(tmp_path):
    """Found from the environment or its site-packages; another Python's build or no torch: one clear sentence."""
    import importlib.machinery

    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    good = fake_environment(tmp_path / "good", f"_C{suffix}")
    assert site_packages(tmp_path / "good") == good and site_packages(good) == good
    fake_environment(tmp_path / "other", "_C.cpython-39-x86_64-linux-gnu.so")
    with pytest.raises(ValueError, match="not built for Blender's Python"):
        site_packages(tmp_path / "other")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no PyTorch in"):
        site_packages(tmp_path / "empty")
    with pytest.raises(ValueError, match="not a folder"):
        site_packages(tmp_path / "missing")


def bundled_wheels() -> list[Path]:
    """The wheels the zip bundles, torch (CPU) and what it depends on (wheels/build.py downloads them)."""
    wheels = sorted((ROOT / "wheels").glob("*.whl"))
    if not any(w.name.startswith("torch-") for w in wheels):
        pytest.skip("wheels/ holds no torch wheel: run `make extension` first")  # the zip fixtures build it
    return wheels


class Index:
    """A PEP 503 package index of `wheels` on 127.0.0.1, optionally with a wrong sha256 for torch or
    sending at most `rate` bytes per second."""

    def __init__(self, root: Path, wheels: list[Path], wrong_torch_hash: bool = False, rate: float = 0.0):
        files = root / "files"
        files.mkdir(parents=True)
        projects: dict[str, list[str]] = {}
        for wheel in wheels:
            (files / wheel.name).symlink_to(wheel)
            digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
            name = wheel.name.split("-")[0].lower().replace("_", "-")
            if wrong_torch_hash and name == "torch":
                digest = "0" * 64
            projects.setdefault(name, []).append(f'<a href="../../files/{wheel.name}#sha256={digest}">{wheel.name}</a>')
        for name, links in projects.items():
            (root / "simple" / name).mkdir(parents=True)
            (root / "simple" / name / "index.html").write_text("<html><body>" + "<br>".join(links) + "</body></html>")
        directory, limit = str(root), rate

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=directory, **kwargs)

            def copyfile(self, source, outputfile):
                while chunk := source.read(1 << 16):
                    outputfile.write(chunk)
                    if limit:
                        time.sleep(len(chunk) / limit)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/simple"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def nothing_left(user_dir: Path) -> bool:
    root = user_dir / torch_source.INSTALL_FOLDER
    return not root.exists() or not any(root.iterdir())


@pytest.mark.slow
def test_a_wrong_hash_an_unreachable_index_and_cancel_leave_nothing(extension_zip, tmp_path):
    """pip refuses a file whose sha256 is not the index's; an index nobody answers gives a message
    about the connection; Cancel during the download stops within seconds. None leaves a file."""
    wheels = bundled_wheels()
    bad = Index(tmp_path / "bad", wheels, wrong_torch_hash=True)
    try:
        job = Install(tmp_path / "user1", "cpu", bad.url).start()
        assert job.wait(600)
        assert job.error and "sha256" in job.error and nothing_left(tmp_path / "user1"), job.error
    finally:
        bad.close()

    job = Install(tmp_path / "user2", "cpu", f"http://127.0.0.1:{free_port()}/simple").start()
    assert job.wait(600)
    assert job.error and "cannot reach" in job.error and nothing_left(tmp_path / "user2"), job.error

    slow = Index(tmp_path / "slow", wheels, rate=20e6)  # torch's ~190 MB take ~10 s
    try:
        job = Install(tmp_path / "user3", "cpu", slow.url).start()
        deadline = time.monotonic() + 300
        while job.fraction < 0.05 and not job.done.is_set() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert 0.05 <= job.fraction < 0.95 and "downloading" in job.message, (job.fraction, job.message, job.error)
        asked = time.monotonic()
        job.cancel()
        assert job.wait(30) and time.monotonic() - asked < 10
        assert job.error and "cancelled" in job.error and nothing_left(tmp_path / "user3")
    finally:
        slow.close()


BLENDER_SCRIPT = """
import json, os, sys
import bpy
out = {}
bpy.ops.extensions.package_install_files(filepath=ZIP, repo="user_default", enable_on_install=True, overwrite=True)
module = sys.modules["bl_ext.user_default.world_tracing"]
prefs = bpy.context.preferences.addons["bl_ext.user_default.world_tracing"].preferences
user = bpy.utils.extension_path_user("bl_ext.user_default.world_tracing", create=True)
out["user"] = user
try:
    bpy.ops.world_tracing.install_torch(build="cpu", index_url=INDEX)
except RuntimeError as e:
    out["offline"] = str(e)
prefs.torch_source = "environment"
prefs.torch_environment = EMPTY
out["bad_environment"] = [prefs.torch_source, prefs.torch_message]
prefs.torch_source = "download"
before = len(bpy.data.objects)
try:
    bpy.ops.world_tracing.trace_image(filepath=SAMPLE)
except RuntimeError as e:
    out["nothing_installed"] = str(e)
out["objects_added_by_refusal"] = len(bpy.data.objects) - before
bpy.context.preferences.system.use_online_access = True
out["install"] = list(bpy.ops.world_tracing.install_torch(build="cpu", index_url=INDEX))
out["source"] = prefs.torch_source
out["torch_loaded_before_trace"] = "torch" in sys.modules
out["trace"] = list(bpy.ops.world_tracing.trace_image(filepath=SAMPLE))
import torch
out["torch_file"] = torch.__file__
out["objects_added"] = len(bpy.data.objects) - before
import addon_utils
addon_utils.disable("bl_ext.user_default.world_tracing", default_set=True)
out["paths_after_disable"] = [p for p in sys.path if p.startswith(user)]
print("RESULT " + json.dumps(out))
"""


@pytest.mark.slow
def test_the_gpu_build_installs_on_request_and_the_extension_runs_on_it(extension_zip, tmp_path):
    """In a fresh Blender (bpy) process with the zip installed: Install refuses while online access is
    off; a folder without torch chosen as the environment gives one message and keeps the bundled
    PyTorch; the GPU build chosen before one is installed stops a trace with a message, building
    nothing; then Install fetches torch from the local index into the extension's user folder, and
    the next trace runs on that torch; disabling the extension leaves no path behind."""
    index = Index(tmp_path / "index", bundled_wheels())
    (tmp_path / "empty").mkdir()
    script = tmp_path / "run.py"
    script.write_text(
        f"ZIP = {str(extension_zip)!r}\nINDEX = {index.url!r}\nSAMPLE = {str(SAMPLE)!r}\n"
        f"EMPTY = {str(tmp_path / 'empty')!r}\n" + BLENDER_SCRIPT
    )
    try:
        env = {**os.environ, "BLENDER_USER_RESOURCES": str(tmp_path / "blender-user"), "OMP_NUM_THREADS": "1"}
        result = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path
        )
    finally:
        index.close()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = json.loads(result.stdout.split("RESULT ", 1)[1])
    user = Path(out["user"])
    assert "online access is off" in out["offline"]
    source, message = out["bad_environment"]
    assert source == "bundled" and "no PyTorch in" in message and "keeping the bundled PyTorch" in message
    assert "no GPU build is installed" in out["nothing_installed"] and out["objects_added_by_refusal"] == 0
    assert out["install"] == ["FINISHED"] and out["source"] == "download"
    assert not out["torch_loaded_before_trace"] and out["trace"] == ["FINISHED"] and out["objects_added"] > 0
    build = installed_builds(user)["cpu"]
    assert Path(out["torch_file"]).is_relative_to(build), (out["torch_file"], build)
    assert out["paths_after_disable"] == []
    shutil.rmtree(user / torch_source.INSTALL_FOLDER)


def test_installs_are_only_complete_folders(tmp_path):
    """A folder counts as installed only once its record is written (the last step of an install)."""
    root = tmp_path / torch_source.INSTALL_FOLDER
    (root / "cu128").mkdir(parents=True)
    (root / ".staging-cu130").mkdir()
    assert installed_builds(tmp_path) == {}
    (root / "cu128" / torch_source.RECORD).write_text("{}")
    assert installed_builds(tmp_path) == {"cu128": root / "cu128"}
    with pytest.raises(ValueError, match="no GPU build is installed"):
        torch_source.active_folder("download", tmp_path / "elsewhere")
    assert torch_source.active_folder("download", tmp_path) == root / "cu128"
    assert torch_source.active_folder("bundled", tmp_path) is None
    sys.path.insert(0, "unused")  # activate/deactivate leave the rest of the path alone
    try:
        torch_source.activate(root / "cu128")
        assert sys.path[0] == str(root / "cu128") and sys.path[1] == "unused"
        torch_source.deactivate(root / "cu128")
        assert str(root / "cu128") not in sys.path and sys.path[0] == "unused"
    finally:
        sys.path.remove("unused")


def test_torch_bytecode_is_compiled_once_in_the_background(tmp_path):
    """A site-packages whose torch has no bytecode yet (as Blender extracts a wheel) gets it from a
    background compileall; once there, or without torch, nothing is started."""
    site = tmp_path / "site-packages"
    (site / "torch" / "nn").mkdir(parents=True)
    (site / "torch" / "__init__.py").write_text("from . import nn\n")
    (site / "torch" / "nn" / "__init__.py").write_text("VALUE = 1\n")
    process = torch_source.precompile(site)
    assert process is not None and process.wait(120) == 0
    assert list((site / "torch" / "__pycache__").glob("__init__.*.pyc"))
    assert list((site / "torch" / "nn" / "__pycache__").glob("__init__.*.pyc"))
    assert torch_source.precompile(site) is None
    assert torch_source.precompile(tmp_path) is None


def live_members(group: int) -> list[int]:
    """Processes of a process group that have not ended (zombies count as ended), from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (name)": state, ppid, pgrp, ...
        except (OSError, IndexError):
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc (Linux)")
def test_stopping_the_bytecode_warm_up_ends_its_workers_too(tmp_path):
    """Stopped while it compiles (the extension is disabled), the warm-up leaves no process behind: its
    main process and the workers `compileall -j 0` started end together."""
    site = tmp_path / "site-packages"
    for k in range(400):  # enough files to be still compiling when stopped
        (site / "torch" / f"m{k}").mkdir(parents=True)
        (site / "torch" / f"m{k}" / "__init__.py").write_text(
            "".join(f"def f{i}(x):\n    return x + {i}\n" for i in range(200))
        )
    (site / "torch" / "__init__.py").write_text("")
    process = torch_source.precompile(site)
    assert process is not None
    deadline = time.monotonic() + 30
    while not list(site.glob("torch/m*/__pycache__")) and time.monotonic() < deadline:
        time.sleep(0.01)  # the workers are running
    torch_source.stop_precompile(process)
    assert process.returncode is not None
    deadline = time.monotonic() + 10
    while live_members(process.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not live_members(process.pid)  # nothing of its process group runs on


def test_install_progress_survives_folders_that_pip_removes_while_it_counts(tmp_path):
    """Install's progress counts the staging folder's bytes while pip makes and removes temporary folders
    there (pip-build-tracker-*): a folder that vanishes mid-count is skipped, not an error that fails the
    install."""
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "torch.whl").write_bytes(b"1" * 1000)
    stop = threading.Event()

    def churn() -> None:
        i = 0
        while not stop.is_set():
            folder = tmp_path / f"pip-build-tracker-{i}" / "deeper"
            folder.mkdir(parents=True)
            (folder / "x").write_bytes(b"0" * 10)
            shutil.rmtree(folder.parent)
            i += 1

    worker = threading.Thread(target=churn)
    worker.start()
    try:
        for _ in range(3000):
            assert torch_source._folder_bytes(tmp_path) >= 1000
    finally:
        stop.set()
        worker.join()
