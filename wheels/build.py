"""Download the wheels the extension bundles and build one validated extension zip per platform.

    python wheels/build.py                                   # this platform, Python 3.11 (Blender 4.2–5.0)
    python wheels/build.py --platform windows-x64 macos-arm64 --python 3.13    # Blender 5.1+
    python wheels/build.py --platform linux-x64 windows-x64 --torch-index https://download.pytorch.org/whl/cu128

What is bundled is pinned in wheels/requirements.txt. pip resolves it for the target platform and
Python (`pip install --dry-run --report`), and the wheel list comes from that resolution, never from
pip's log text; missing wheels are downloaded into wheels/ (cached between builds), and those a trace
imports get their bytecode when this Python is the target's (`add_bytecode`). Blender ships
numpy, so it is never bundled. The manifest's `wheels` and `platforms` lists are written for the
build only and taken out again afterwards; packing and validation use Blender's own extension tool
from the bpy module. A build is refused when a wheel the extension needs is missing, and a zip is
deleted again when any module inside it imports a package that neither Blender, the standard
library nor the bundled wheels provide.
"""

from __future__ import annotations

import argparse
import ast
import base64
import hashlib
import importlib.util
import json
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ROOT / "wheels"
BUNDLED = WHEELS / "requirements.txt"
MANIFEST = ROOT / "blender_manifest.toml"

SHIPPED_BY_BLENDER = ("numpy",)  # distributions Blender's Python already has
# Distributions a trace imports, which get their bytecode (`add_bytecode`); the rest (sympy, networkx,
# jinja2, ...) only torch's compiler and friends import.
IMPORTED_BY_A_TRACE = ("torch", "einops", "safetensors", "pillow", "typing-extensions")
# Top-level modules a Blender install provides besides the standard library.
BLENDER_MODULES = frozenset(
    {
        "bpy",
        "bpy_extras",
        "bpy_types",
        "mathutils",
        "bmesh",
        "gpu",
        "gpu_extras",
        "bl_math",
        "blf",
        "bl_ui",
        "bl_operators",
        "addon_utils",
        "idprop",
        "imbuf",
        "aud",
        "freestyle",
        "rna_prop_ui",
        "numpy",
    }
)


@dataclass(frozen=True)
class Platform:
    blender: str  # Blender's platform name in the manifest
    pypi: tuple[str, ...]  # pip --platform tags accepted for it


PLATFORMS = {
    "linux-x64": Platform("linux-x64", ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")),
    "windows-x64": Platform("windows-x64", ("win_amd64",)),
    "macos-arm64": Platform(
        "macos-arm64", ("macosx_11_0_arm64", "macosx_12_0_arm64", "macosx_13_0_arm64", "macosx_14_0_arm64")
    ),
}
# Blender versions whose bundled Python matches a wheel tag (blender_version_max is exclusive).
BLENDER_RANGE = {"3.11": ("4.2.0", "5.1.0"), "3.13": ("5.1.0", None)}


def bundled_requirements() -> list[str]:
    """The pinned requirements of wheels/requirements.txt (comments and blank lines dropped)."""
    lines = (line.split("#", 1)[0].strip() for line in BUNDLED.read_text().splitlines())
    return [line for line in lines if line]


def distribution(name: str) -> str:
    """A distribution or requirement name in PEP 503 normal form ('Pillow==13' → 'pillow')."""
    return re.sub(r"[-_.]+", "-", re.split(r"[<>=!~;\[ ]", name, maxsplit=1)[0]).lower()


def wheel_distribution(wheel: Path) -> str:
    return distribution(wheel.name.split("-", 1)[0])


def blender_ext() -> Path:
    """Blender's extension command-line tool, shipped inside the bpy module."""
    spec = importlib.util.find_spec("bpy")
    if spec is None or spec.origin is None:
        raise SystemExit("the bpy module is needed to build the extension: pip install bpy (see requirements.txt)")
    found = sorted(Path(spec.origin).parent.glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
    if not found:
        raise SystemExit(f"blender_ext.py not found under {Path(spec.origin).parent}")
    return found[-1]


def pip_target(target: Platform, python: str, torch_index: str | None) -> list[str]:
    """pip options that resolve binary wheels for another platform and Python."""
    args = ["--only-binary=:all:", "--python-version", python, "--implementation", "cp", "--disable-pip-version-check"]
    for tag in target.pypi:
        args += ["--platform", tag]
    if torch_index:
        args += ["--extra-index-url", torch_index]
    return args


def resolve(target: Platform, python: str, torch_index: str | None) -> dict[str, str]:
    """{wheel file name: download URL} of everything the bundled requirements need on `target`."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--dry-run",
                "--ignore-installed",
                "--quiet",
                "--report",
                str(report),
                "--target",
                str(Path(tmp) / "unused"),
                *pip_target(target, python, torch_index),
                *bundled_requirements(),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        items = json.loads(report.read_text())["install"]
    urls = {item["download_info"]["url"] for item in items}
    return {unquote(Path(urlparse(url).path).name): url for url in urls}


def download(target: Platform, python: str, torch_index: str | None) -> list[Path]:
    """The wheels of the bundled requirements for one platform and Python, fetched into wheels/
    where not cached there already; Blender's own packages left out."""
    wheels = []
    for name, url in sorted(resolve(target, python, torch_index).items()):
        path = WHEELS / name
        if not path.is_file():
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--dest",
                    str(WHEELS),
                    "--quiet",
                    *pip_target(target, python, torch_index),
                    url,
                ],
                check=True,
            )
        if not path.is_file():
            raise SystemExit(f"pip did not fetch {name} from {url}")
        if wheel_distribution(path) in IMPORTED_BY_A_TRACE:
            add_bytecode(path, python)
        if wheel_distribution(path) not in SHIPPED_BY_BLENDER:
            wheels.append(path)
    return wheels


def add_bytecode(wheel: Path, python: str) -> None:
    """Put compiled bytecode for `python` into `wheel` (in place, listed in its RECORD), unless it has
    it already or this is another Python (bytecode is per version; the extension's warm-up compiles it
    then). Blender extracts wheels without compiling them, so a fresh install's first `import torch`
    would compile ~2 400 modules: 2.2 s of a 4 s first trace. The pycs are unchecked-hash ones, valid
    whatever dates Blender gives the extracted sources."""
    tag = f".cpython-{python.replace('.', '')}.pyc"
    if f"{sys.version_info.major}.{sys.version_info.minor}" != python:
        return
    packed = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(wheel) as z, tempfile.TemporaryDirectory() as tmp:
        names = z.namelist()
        sources = [n for n in names if n.endswith(".py")]
        if not sources or any(n.endswith(tag) for n in names):
            return
        z.extractall(tmp, sources)
        # files that do not compile (another Python's syntax, test fixtures) are skipped, as pip does
        compile_all = [sys.executable, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash"]
        subprocess.run([*compile_all, "-s", tmp, tmp], check=False, stdout=subprocess.DEVNULL)
        pycs = sorted(p.relative_to(tmp).as_posix() for p in Path(tmp).rglob(f"*{tag}"))
        record = next(n for n in names if n.endswith(".dist-info/RECORD"))
        rows = [
            f"{name},sha256={record_hash_of(Path(tmp, name).read_bytes())},{Path(tmp, name).stat().st_size}"
            for name in pycs
        ]
        with zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as out:
            for info in z.infolist():
                if info.filename == record:
                    continue
                entry = zipfile.ZipInfo(info.filename, info.date_time)
                entry.external_attr, entry.compress_type = info.external_attr, zipfile.ZIP_DEFLATED
                with z.open(info) as source, out.open(entry, "w") as target:
                    shutil.copyfileobj(source, target, 1 << 20)
            for name in pycs:
                out.write(Path(tmp, name), name)
            out.writestr(record, z.read(record).decode().rstrip("\n") + "\n" + "\n".join(rows) + "\n")
    packed.replace(wheel)


def record_hash_of(data: bytes) -> str:
    """A file's hash as a wheel's RECORD writes it: urlsafe base64 of its sha256, unpadded."""
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def check_bundle(wheels: list[Path]) -> None:
    """Refuse to go on unless every requirement of wheels/requirements.txt has its wheel in `wheels`."""
    have = {wheel_distribution(w) for w in wheels}
    missing = [r for r in bundled_requirements() if distribution(r) not in have]
    if missing:
        raise SystemExit(f"no wheel found for {', '.join(missing)}: the extension cannot import it; not building")


def manifest_with(text: str, wheels: list[Path], platforms: list[str], python: str) -> str:
    """The source manifest with `platforms` and `wheels` lists and the Blender range for `python`.

    The source tree's manifest has neither list (Blender refuses empty ones when the tree is used as
    a linked development extension); they go right after `blender_version_min`.
    """
    if re.search(r"(?m)^(platforms|wheels|blender_version_max) =", text):
        raise SystemExit(f"{MANIFEST} must not list platforms, wheels or blender_version_max: the build writes them")
    lo, hi = BLENDER_RANGE[python]
    listed = ",\n".join(f'  "./wheels/{w.name}"' for w in wheels)
    lines = [f'blender_version_min = "{lo}"'] + ([f'blender_version_max = "{hi}"'] if hi else [])
    lines += ["platforms = [" + ", ".join(f'"{p}"' for p in platforms) + "]", f"wheels = [\n{listed}\n]"]
    text, n = re.subn(r'(?m)^blender_version_min = ".*"$', "\n".join(lines), text)
    if n != 1:
        raise SystemExit(f"{MANIFEST} needs one blender_version_min line")
    return text


def top_level_modules(wheel: Path) -> set[str]:
    """The importable top-level names a wheel installs (packages and single-file modules)."""
    names = set()
    with zipfile.ZipFile(wheel) as z:
        for entry in z.namelist():
            first = entry.split("/", 1)[0]
            if first.endswith((".dist-info", ".data")):
                continue
            names.add(first.split(".", 1)[0] if "/" not in entry else first)
    return names


def optional_imports(tree: ast.AST) -> set[int]:
    """ids of the nodes inside the body of a `try` whose handlers catch ImportError (or ModuleNotFoundError)."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Try):
            continue
        caught = set()
        for handler in node.handlers:
            kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
            caught |= {k.id for k in kinds if isinstance(k, ast.Name)}
        if caught & {"ImportError", "ModuleNotFoundError"}:
            inside |= {id(inner) for statement in node.body for inner in ast.walk(statement)}
    return inside


def foreign_imports(package: Path, provided: set[str]) -> dict[str, list[str]]:
    """{module name: [files]} of absolute imports inside an extension zip that nothing provides.

    Provided are the standard library, Blender's own modules, `provided` (the bundled wheels) and
    the extension's own top-level modules. Imports inside functions count: they run on a click. An
    import inside a `try` that handles ImportError is optional (the code says what happens without it).
    """
    found: dict[str, list[str]] = {}
    with zipfile.ZipFile(package) as z:
        files = [n for n in z.namelist() if n.endswith(".py")]
        own = {n.split("/", 1)[0].removesuffix(".py") for n in z.namelist()}
        for name in files:
            tree = ast.parse(z.read(name), filename=name)
            optional = optional_imports(tree)
            for node in ast.walk(tree):
                if id(node) in optional:
                    continue
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    top = module.split(".", 1)[0]
                    if top not in sys.stdlib_module_names and top not in BLENDER_MODULES | provided | own:
                        found.setdefault(top, []).append(name)
    return found


def build(platforms: list[str], python: str, torch_index: str | None, out: Path) -> list[Path]:
    """Resolve and download, write the manifest, build with --split-platforms, check and validate; returns the zips."""
    tool = blender_ext()
    chosen = [PLATFORMS[p] for p in platforms]
    wheels = sorted({w for p in chosen for w in download(p, python, torch_index)})
    check_bundle(wheels)
    out = out / ("cp" + python.replace(".", ""))
    out.mkdir(parents=True, exist_ok=True)
    original = MANIFEST.read_text()
    try:
        MANIFEST.write_text(manifest_with(original, wheels, [p.blender for p in chosen], python))
        subprocess.run(
            [
                sys.executable,
                str(tool),
                "build",
                "--source-dir",
                str(ROOT),
                "--output-dir",
                str(out),
                "--split-platforms",
            ],
            check=True,
        )
    finally:
        MANIFEST.write_text(original)
    zips = sorted(z for z in out.glob("*.zip") if any(p.replace("-", "_") in z.name for p in platforms))
    provided = set().union(*(top_level_modules(w) for w in wheels))
    for z in zips:
        foreign = foreign_imports(z, provided)
        if foreign:
            z.unlink()
            listing = "; ".join(f"{m} (in {', '.join(sorted(set(f)))})" for m, f in sorted(foreign.items()))
            raise SystemExit(
                f"{z.name} imports packages that neither Blender nor the bundled wheels provide: {listing}. "
                "Bundle them (wheels/requirements.txt) or keep those modules out of the zip "
                "(paths_exclude_pattern in blender_manifest.toml)"
            )
        subprocess.run([sys.executable, str(tool), "validate", str(z)], check=True)
    return zips


def this_platform() -> str:
    """The Blender platform name of this machine (for local builds and tests)."""
    machine = platform.machine().lower()
    if sys.platform == "darwin":
        return "macos-arm64"
    if sys.platform == "win32":
        return "windows-x64"
    if machine not in ("x86_64", "amd64"):
        raise SystemExit(f"no wheel set for {sys.platform} {machine}; pick one with --platform")
    return "linux-x64"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--platform", nargs="+", default=[this_platform()], choices=sorted(PLATFORMS), help="default: this machine's"
    )
    parser.add_argument(
        "--python",
        default="3.11",
        choices=sorted(BLENDER_RANGE),
        help="3.11 for Blender 4.2–5.0, 3.13 for Blender 5.1+",
    )
    parser.add_argument(
        "--torch-index", help="extra index for torch, e.g. https://download.pytorch.org/whl/cu128 (CUDA)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "dist")
    args = parser.parse_args()
    for z in build(args.platform, args.python, args.torch_index, args.out):
        print(f"built and validated {z} ({z.stat().st_size / 1e6:.0f} MB)")


if __name__ == "__main__":
    main()
