"""Download the wheels the extension bundles and build one validated extension zip per platform.

    python wheels/build.py                                   # this platform, Python 3.11 (Blender 4.2–5.0)
    python wheels/build.py --platform windows-x64 macos-arm64 --python 3.13    # Blender 5.1+
    python wheels/build.py --platform linux-x64 windows-x64 --torch-index https://download.pytorch.org/whl/cu128

Wheels land in wheels/ (cached between builds), zips in dist/<python tag>/. Blender ships numpy,
so it is never bundled. The manifest's `wheels` and `platforms` lists are written for the build and
restored afterwards; packing and validation use Blender's own extension tool from the bpy module.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ROOT / "wheels"
MANIFEST = ROOT / "blender_manifest.toml"

# What the extension imports beyond Blender's own Python (torch brings its pure-Python needs).
PACKAGES = ["torch==2.13.0", "einops==0.8.2", "safetensors==0.8.0", "pillow==13.0.0"]
SHIPPED_BY_BLENDER = ("numpy",)


@dataclass(frozen=True)
class Platform:
    blender: str  # Blender's platform name in the manifest
    pypi: tuple[str, ...]  # pip --platform tags accepted for it


PLATFORMS = {
    "linux-x64": Platform("linux-x64", ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")),
    "windows-x64": Platform("windows-x64", ("win_amd64",)),
    "macos-arm64": Platform("macos-arm64", ("macosx_11_0_arm64", "macosx_12_0_arm64", "macosx_13_0_arm64", "macosx_14_0_arm64")),
}
# Blender versions whose bundled Python matches a wheel tag (blender_version_max is exclusive).
BLENDER_RANGE = {"3.11": ("4.2.0", "5.1.0"), "3.13": ("5.1.0", None)}


def blender_ext() -> Path:
    """Blender's extension command-line tool, shipped inside the bpy module."""
    spec = importlib.util.find_spec("bpy")
    if spec is None or spec.origin is None:
        raise SystemExit("the bpy module is needed to build the extension: pip install bpy==5.0.1")
    found = sorted(Path(spec.origin).parent.glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
    if not found:
        raise SystemExit(f"blender_ext.py not found under {Path(spec.origin).parent}")
    return found[-1]


def download(target: Platform, python: str, torch_index: str | None) -> list[Path]:
    """pip download the packages as binary wheels for one platform and Python; returns their files."""
    cmd = [sys.executable, "-m", "pip", "download", *PACKAGES, "--dest", str(WHEELS), "--only-binary=:all:",
           "--python-version", python, "--implementation", "cp", "--disable-pip-version-check", "--progress-bar", "off"]
    for tag in target.pypi:
        cmd += ["--platform", tag]
    if torch_index:
        cmd += ["--extra-index-url", torch_index]
    log = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    # "Saved <path>" for new files, "File was already downloaded <path>" for cached ones
    files = [Path(m) for m in re.findall(r"(?m)^(?:Saved|File was already downloaded) (\S+\.whl)$", log)]
    return [WHEELS / f.name for f in files if not f.name.lower().startswith(SHIPPED_BY_BLENDER)]


def manifest_with(text: str, wheels: list[Path], platforms: list[str], python: str) -> str:
    """The manifest text with the wheels/platforms lists and the Blender range for `python`."""
    lo, hi = BLENDER_RANGE[python]
    listed = ",\n".join(f'  "./wheels/{w.name}"' for w in wheels)
    text = re.sub(r"(?m)^platforms = \[.*?\]$", "platforms = [" + ", ".join(f'"{p}"' for p in platforms) + "]", text)
    text = re.sub(r"(?m)^wheels = \[.*?\]$", f"wheels = [\n{listed}\n]", text)
    text = re.sub(r'(?m)^blender_version_min = ".*"$', f'blender_version_min = "{lo}"', text)
    if hi:
        text = text.replace(f'blender_version_min = "{lo}"', f'blender_version_min = "{lo}"\nblender_version_max = "{hi}"')
    return text


def build(platforms: list[str], python: str, torch_index: str | None, out: Path) -> list[Path]:
    """Download, write the manifest, build with --split-platforms, validate; returns the zips."""
    tool = blender_ext()
    chosen = [PLATFORMS[p] for p in platforms]
    wheels = sorted({w for p in chosen for w in download(p, python, torch_index)})
    out = out / ("cp" + python.replace(".", ""))
    out.mkdir(parents=True, exist_ok=True)
    original = MANIFEST.read_text()
    try:
        MANIFEST.write_text(manifest_with(original, wheels, [p.blender for p in chosen], python))
        subprocess.run([sys.executable, str(tool), "build", "--source-dir", str(ROOT), "--output-dir", str(out),
                        "--split-platforms"], check=True)
    finally:
        MANIFEST.write_text(original)
    zips = sorted(z for z in out.glob("*.zip") if any(p.replace("-", "_") in z.name for p in platforms))
    for z in zips:
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
    parser.add_argument("--platform", nargs="+", default=[this_platform()], choices=sorted(PLATFORMS),
                        help="default: this machine's")
    parser.add_argument("--python", default="3.11", choices=sorted(BLENDER_RANGE),
                        help="3.11 for Blender 4.2–5.0, 3.13 for Blender 5.1+")
    parser.add_argument("--torch-index", help="extra index for torch, e.g. https://download.pytorch.org/whl/cu128 (CUDA)")
    parser.add_argument("--out", type=Path, default=ROOT / "dist")
    args = parser.parse_args()
    for z in build(args.platform, args.python, args.torch_index, args.out):
        print(f"built and validated {z} ({z.stat().st_size / 1e6:.0f} MB)")


if __name__ == "__main__":
    main()
