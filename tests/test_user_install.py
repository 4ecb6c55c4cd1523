"""The extension as a user installs it: a Python holding only the bpy module (what a Blender install
has: numpy and no torch, no scipy), the zip installed by Blender's own installer.

Each Blender version gets its own environment in .venv-blender/<version>/ (made once, then reused),
on the oldest and the newest Blender this wheel set claims (the manifest's 4.2 minimum, the bpy of
requirements.txt). The zip is built twice, the second time with the wheel cache warm.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT

pytestmark = [pytest.mark.blender, pytest.mark.slow]

OLDEST_BLENDER = "4.2.23"  # the 4.2 LTS: blender_version_min of the manifest
NEWEST_BLENDER = re.search(r"(?m)^bpy==(\S+)$", (ROOT / "requirements.txt").read_text()).group(1)


def user_blender(version: str) -> Path:
    """The Python of a virtual environment that holds `pip install bpy==version` and nothing else."""
    env = ROOT / ".venv-blender" / version
    python = env / "bin" / "python"
    marker = env / "installed"
    if not marker.is_file():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(env)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", f"bpy=={version}"],
            check=True,
        )
        marker.touch()
    return python


def manifest_wheels(package: Path) -> list[str]:
    with zipfile.ZipFile(package) as z:
        text = z.read("blender_manifest.toml").decode()
    return re.findall(r'"\./wheels/([^"]+\.whl)"', text)


@pytest.fixture(scope="session")
def user_zip(extension_zip, tmp_path_factory) -> Path:
    """The extension zip of this platform, built a second time by wheels/build.py (the wheel cache warm):
    both builds list the same wheels. The second build is deleted, the session's zip returned."""
    out = tmp_path_factory.mktemp("dist-again")
    subprocess.run([sys.executable, str(ROOT / "wheels" / "build.py"), "--out", str(out)], check=True)
    again = next((out / "cp311").glob("world_tracing-*-linux_x64.zip"))
    first, second = manifest_wheels(extension_zip), manifest_wheels(again)
    shutil.rmtree(out)
    assert first == second and any(w.startswith("torch-") for w in second), (first, second)
    return extension_zip


@pytest.mark.parametrize("version", [OLDEST_BLENDER, NEWEST_BLENDER])
def test_zip_installs_enables_and_traces_in_a_users_blender(user_zip, version, tmp_path):
    """Installed from its zip into bpy-only Python: enables, imports every module it ships, traces the
    bundled sample twice, renders through the matched camera, disables and enables again, traces again."""
    python = user_blender(version)
    run = subprocess.run(
        [str(python), "-I", str(ROOT / "tests" / "user_blender.py"), str(user_zip), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    assert run.returncode == 0 and lines, run.stdout[-3000:] + run.stderr[-3000:]
    figures = json.loads(lines[-1])
    print(f"Blender {version} from the zip: {json.dumps(figures)}")
    assert figures["blender"].startswith(version.rsplit(".", 1)[0])
    assert figures["modules"] >= 15
    assert figures["render_alpha_iou"] > 0.8, figures
    assert not figures["warm_up_running_after_first_trace"], figures
