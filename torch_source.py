"""Where the extension's PyTorch comes from: the bundled CPU wheel, a GPU build installed on request
into the extension's user folder, or the site-packages of an existing Python environment.

Plain Python (no bpy, no torch), so that registration can put the chosen PyTorch on the path before
anything imports torch. A switch takes effect in the next Blender session: torch, once imported,
stays for the process.

The GPU build is fetched by pip (`python -m pip download`, which resolves the dependencies and
checks every file against the index's sha256), into a staging folder that is watched for progress
and deleted on cancel or failure; then installed offline from those files (`pip install --no-index
--target`) and moved into place in one rename, so a folder that exists is a complete install.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SOURCES = ("bundled", "download", "environment")
TORCH_VERSION = "2.13.0"  # the bundled wheel's version (wheels/requirements.txt); GPU builds match it
INDEX = "https://download.pytorch.org/whl/{build}"
# CUDA builds from the newest down, with the oldest driver that runs each (NVIDIA's CUDA compatibility
# table, Linux numbers; Windows needs a slightly newer driver of the same branch). The newest build a
# driver runs supports the newest GPU generations.
CUDA_BUILDS = ((580.65, "cu130"), (570.26, "cu128"), (560.28, "cu126"), (525.60, "cu121"), (520.61, "cu118"))
ROCM_BUILD = "rocm6.4"
INSTALL_FOLDER = "torch"  # under the extension's user folder: torch/<build>/ holds one complete install
RECORD = "world_tracing_torch.json"  # written last into an install: build, version, index


@dataclass(frozen=True)
class Gpu:
    """What this machine has: kind "nvidia", "apple", "amd" or "none", the GPUs' names and the driver."""

    kind: str
    names: tuple[str, ...] = ()
    driver: str = ""


def detect_gpu() -> Gpu:
    """The GPU PyTorch could use, found without importing torch (nvidia-smi, the platform, ROCm)."""
    if sys.platform == "darwin" and platform.machine() == "arm64":
        return Gpu("apple", ("Apple silicon",))
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        rows = [line.rsplit(",", 1) for line in out.stdout.strip().splitlines() if "," in line]
        if out.returncode == 0 and rows:
            return Gpu("nvidia", tuple(name.strip() for name, _ in rows), rows[0][1].strip())
    except (OSError, subprocess.SubprocessError):
        pass
    if sys.platform.startswith("linux") and Path("/opt/rocm").is_dir():
        return Gpu("amd", ("AMD GPU (ROCm)",))
    return Gpu("none")


_detected: list[Gpu] = []


def detect_gpu_cached() -> Gpu:
    """detect_gpu, asked once per session (the preferences redraw often)."""
    if not _detected:
        _detected.append(detect_gpu())
    return _detected[0]


def gpu_build(gpu: Gpu) -> str:
    """The PyTorch build to fetch for this GPU ("cu128", "rocm6.4", ...); ValueError says why there is none."""
    if gpu.kind == "apple":
        raise ValueError("Apple silicon needs no GPU build: the bundled PyTorch already uses the GPU (MPS)")
    if gpu.kind == "amd":
        return ROCM_BUILD
    if gpu.kind != "nvidia":
        raise ValueError("no NVIDIA GPU found (nvidia-smi did not answer): the bundled CPU build is the one to use")
    match = re.match(r"(\d+)\.(\d+)", gpu.driver)
    if not match:
        raise ValueError(f"cannot read the NVIDIA driver version {gpu.driver!r}")
    version = float(f"{match.group(1)}.{match.group(2)}")
    for minimum, build in CUDA_BUILDS:
        if version >= minimum:
            return build
    raise ValueError(
        f"the NVIDIA driver {gpu.driver} is older than any CUDA build of PyTorch supports "
        f"(at least {CUDA_BUILDS[-1][0]}): update the driver"
    )


def installed_builds(user_dir: str | Path) -> dict[str, Path]:
    """Complete GPU installs under the user folder: build → its site-packages folder."""
    root = Path(user_dir) / INSTALL_FOLDER
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir()) if (p / RECORD).is_file()}


def site_packages(folder: str | Path) -> Path:
    """The site-packages of an existing environment that holds a PyTorch for this Python.

    folder: the environment (a venv or conda prefix) or its site-packages. ValueError with one clear
    sentence when there is no torch there or it was built for another Python.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder")
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [folder, folder / "Lib" / "site-packages", *sorted(folder.glob("lib/python3*/site-packages"))]
    with_torch = [c for c in candidates if (c / "torch" / "__init__.py").is_file()]
    if not with_torch:
        raise ValueError(f"no PyTorch in {folder}: point at an environment (or its site-packages) that has torch")
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    for candidate in with_torch:
        if any(p.name[len("_C") :] in suffixes for p in (candidate / "torch").glob("_C.*")):
            return candidate
    found = sorted(p.name for c in with_torch for p in (c / "torch").glob("_C.*"))
    raise ValueError(
        f"the PyTorch in {with_torch[0]} was not built for Blender's Python ({version}"
        f"{'' if not found else ', found ' + found[0]}): make the environment with Python "
        f"{sys.version_info.major}.{sys.version_info.minor}"
    )


def activate(path: str | Path) -> None:
    """Put a site-packages folder first on the path, so that the next `import torch` finds its torch."""
    text = str(path)
    if text not in sys.path:
        sys.path.insert(0, text)


def deactivate(path: str | Path) -> None:
    """Take a folder that `activate` added off the path again."""
    while str(path) in sys.path:
        sys.path.remove(str(path))


def active_folder(source: str, user_dir: str | Path, environment: str = "") -> Path | None:
    """The folder the chosen source puts on the path (None: the bundled wheel). ValueError when the
    source cannot be used (nothing installed, or the environment does not fit)."""
    if source == "bundled":
        return None
    if source == "download":
        builds = installed_builds(user_dir)
        if not builds:
            raise ValueError("no GPU build is installed yet: press Install GPU Build")
        return builds[max(builds)]
    if source == "environment":
        if not environment:
            raise ValueError("choose the environment's folder")
        return site_packages(environment)
    raise ValueError(f"unknown PyTorch source {source!r}; choose from {', '.join(SOURCES)}")


def precompile(folder: str | Path | None = None) -> subprocess.Popen | None:
    """Compile the bytecode of the site-packages that holds torch, in a background process at low
    priority, so that the first trace does not wait for Python to compile torch's modules (a fresh
    install has none: Blender extracts the wheels as plain sources).

    folder: the chosen site-packages (None: where `import torch` would look, found without importing
    it). Returns the process, or None when torch is not there or its bytecode exists already.
    """
    if folder is not None:
        package = Path(folder) / "torch"
    else:
        spec = importlib.util.find_spec("torch")
        if spec is None or spec.origin is None:
            return None
        package = Path(spec.origin).parent
    if not (package / "__init__.py").is_file() or (package / "__pycache__").is_dir():
        return None
    # its own process group: `stop_precompile` ends it together with the workers `-j 0` starts
    if sys.platform == "win32":
        flags = subprocess.BELOW_NORMAL_PRIORITY_CLASS | subprocess.CREATE_NEW_PROCESS_GROUP
        options: dict = {"creationflags": flags}
    else:
        options = {"preexec_fn": lambda: os.nice(19), "start_new_session": True}
    return subprocess.Popen(
        [sys.executable, "-m", "compileall", "-q", "-j", "0", str(package.parent)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        **options,
    )


def stop_precompile(process: subprocess.Popen) -> None:
    """End a bytecode warm-up still running and its worker processes (ending the main process alone
    would leave the workers waiting for it forever)."""
    if process.poll() is not None:
        return
    if sys.platform == "win32":
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)], capture_output=True, check=False)
    else:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:  # ended meanwhile
            pass
    process.wait(10)


def remove_installs(user_dir: str | Path) -> None:
    """Delete every GPU build under the user folder (choosing *bundled* again frees the space)."""
    shutil.rmtree(Path(user_dir) / INSTALL_FOLDER, ignore_errors=True)


class Install:
    """One GPU build fetched into `user_dir/torch/<build>/`, run in a background thread.

    Read `fraction` (0–1) and `message` while it runs; `done` is set when it ends, with `error` the
    reason it failed (None: installed, `path` the new site-packages). `cancel()` stops it within a
    moment; a cancelled or failed install leaves nothing behind.
    """

    def __init__(self, user_dir: str | Path, build: str, index_url: str | None = None, python: str | None = None):
        self.root = Path(user_dir) / INSTALL_FOLDER
        self.build = build
        self.index_url = index_url or INDEX.format(build=build)
        self.python = python or sys.executable
        self.staging = self.root / f".staging-{build}"
        self.path = self.root / build
        self.fraction = 0.0
        self.message = "starting"
        self.error: str | None = None
        self.done = threading.Event()
        self._cancelled = threading.Event()
        self._process: subprocess.Popen | None = None
        self._thread = threading.Thread(target=self._run, name="world-tracing-torch-install", daemon=True)

    def start(self) -> Install:
        self._thread.start()
        return self

    def cancel(self) -> None:
        self._cancelled.set()
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()

    def wait(self, timeout: float | None = None) -> bool:
        return self.done.wait(timeout)

    def _pip(self, *args: str, cwd: Path, watch: Path | None = None) -> str:
        """Run pip (this Python's) and return its output; progress from the bytes arriving under `watch`."""
        env = {**_clean_environment(), "TMPDIR": str(cwd), "TEMP": str(cwd), "TMP": str(cwd)}
        command = [
            self.python,
            "-m",
            "pip",
            "--isolated",
            *args,
            "--disable-pip-version-check",
            "--no-input",
            "--no-cache-dir",
        ]
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        self._process = process
        lines: list[str] = []
        total = [0.0]

        def read() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                lines.append(line)
                size = re.search(r"Downloading \S*?([^/\s]+\.whl)\S* \(([\d.]+) ([kMG]?B)\)", line)
                if size:
                    total[0] += float(size.group(2)) * {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}[size.group(3)]
                    self.message = f"downloading {size.group(1).split('-')[0]}"

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        while process.poll() is None:
            if watch is not None and total[0]:
                self.fraction = min(0.95, _folder_bytes(watch) / total[0])
            time.sleep(0.2)
        reader.join()
        if self._cancelled.is_set():
            raise InterruptedError("cancelled")
        output = "".join(lines)
        if process.returncode != 0:
            raise RuntimeError(_pip_failure(output, self.index_url))
        return output

    def _run(self) -> None:
        try:
            shutil.rmtree(self.staging, ignore_errors=True)
            files, target = self.staging / "files", self.staging / "site-packages"
            files.mkdir(parents=True)
            requirement = f"torch=={TORCH_VERSION}"
            self.message = f"resolving {requirement} at {self.index_url}"
            index = ["--index-url", self.index_url, "--only-binary", ":all:"]
            self._pip("download", "--dest", str(files), *index, requirement, cwd=self.staging, watch=self.staging)
            self.fraction, self.message = 0.95, "installing"
            self._pip(
                "install",
                "--no-index",
                "--find-links",
                str(files),
                "--target",
                str(target),
                requirement,
                cwd=self.staging,
            )
            (target / RECORD).write_text(
                json.dumps({"build": self.build, "version": TORCH_VERSION, "index": self.index_url}), encoding="utf-8"
            )
            if self._cancelled.is_set():
                raise InterruptedError("cancelled")
            shutil.rmtree(self.path, ignore_errors=True)
            target.rename(self.path)
            self.fraction, self.message = 1.0, f"installed PyTorch {TORCH_VERSION} ({self.build})"
        except InterruptedError:
            self.error = "cancelled: nothing was installed"
        except (OSError, RuntimeError) as exc:
            self.error = str(exc)
        finally:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.done.set()


def _clean_environment() -> dict[str, str]:
    """The environment pip runs in: this process's, without variables that would redirect its install
    (pip also runs --isolated: no configuration files)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and k not in ("PYTHONPATH", "PYTHONHOME")}


def _folder_bytes(folder: Path) -> int:
    """Bytes in the files under `folder` now. pip creates and removes temporary files and folders
    meanwhile: what vanishes is skipped (os.walk passes over folders it cannot list)."""
    total = 0
    for root, _, names in os.walk(folder):
        for name in names:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def _pip_failure(output: str, index_url: str) -> str:
    """One clear sentence for a failed pip run, from its output."""
    if "DO NOT MATCH THE HASHES" in output:
        return "a downloaded file does not match the index's sha256: refused, nothing was installed"
    if re.search(r"No module named pip", output):
        return "this Python has no pip (Blender ships one; run Blender's python -m ensurepip)"
    if re.search(r"(?i)(connection|network is unreachable|name or service not known|max retries|timed out)", output):
        return f"cannot reach {index_url}: check the internet connection (or a proxy) and try again"
    if "No matching distribution" in output or "Could not find a version" in output:
        return f"{index_url} has no PyTorch {TORCH_VERSION} for this Python and platform"
    last = [line.strip() for line in output.splitlines() if line.strip()]
    return f"pip failed: {last[-1] if last else 'no output'}"


installing: Install | None = None  # the extension's running (or last) install, shown by the preferences
compiling: subprocess.Popen | None = None  # the bytecode warm-up started when the extension was enabled
seen_devices: list[str] = []  # what the chosen PyTorch saw at the last Check Device


def install_running() -> bool:
    return installing is not None and not installing.done.is_set()
