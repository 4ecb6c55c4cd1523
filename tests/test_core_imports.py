"""`core` is plain Python + torch + numpy: every module imports in a process where bpy cannot."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT

SCRIPT = r"""
import importlib, pkgutil, sys
from importlib.abc import MetaPathFinder

class NoBlender(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("bpy", "mathutils", "bmesh", "_bpy"):
            raise ImportError(f"{name} must not be imported by core")
        return None

sys.meta_path.insert(0, NoBlender())
import core
names = [m.name for m in pkgutil.walk_packages(core.__path__, "core.")]
for name in names:
    importlib.import_module(name)
assert not any(m.split(".")[0] in ("bpy", "mathutils") for m in sys.modules)
print(len(names))
"""


def test_every_core_module_imports_without_blender():
    """Importing each module of core (data engine included) needs neither bpy nor mathutils."""
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) >= 20
