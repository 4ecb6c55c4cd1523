"""wheels/build.py: the check of what a zip imports (every import must be provided, unless it is optional),
and the bytecode it adds to the wheels a trace imports."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile

from conftest import ROOT


def load_build():
    spec = importlib.util.spec_from_file_location("wheel_build", ROOT / "wheels" / "build.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


def test_imports_nothing_provides_are_found_unless_guarded_by_import_error(tmp_path):
    """Top-level and in-function imports of missing packages count; one inside `try … except
    ImportError` (or a tuple naming ModuleNotFoundError) is optional; bundled and own modules are fine."""
    sources = {
        "ext/__init__.py": "import numpy\nfrom . import helper\n",
        "ext/helper.py": "def on_click():\n    import scipy.ndimage\n",
        "ext/video.py": "def read():\n    try:\n        import av\n    except ImportError:\n        return None\n",
        "ext/other.py": "try:\n    import tqdm\nexcept (ModuleNotFoundError, OSError):\n    tqdm = None\n",
        "ext/wrong.py": "try:\n    import skimage\nexcept ValueError:\n    pass\n",
        "ext/bundled.py": "import torch\nimport ext\n",
    }
    package = tmp_path / "ext.zip"
    with zipfile.ZipFile(package, "w") as z:
        for name, text in sources.items():
            z.writestr(name, text)
    found = load_build().foreign_imports(package, {"torch"})
    assert found == {"scipy": ["ext/helper.py"], "skimage": ["ext/wrong.py"]}


def test_wheels_get_bytecode_that_imports_without_compiling_and_is_listed_in_their_record(tmp_path):
    """add_bytecode puts unchecked-hash pycs for this Python into a wheel and its RECORD (hashes that
    match); the extracted package runs the compiled code even after its source changes (no check, no
    recompiling), a second call leaves the wheel as it is, and a build for another Python adds nothing."""
    build = load_build()
    wheel = tmp_path / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("demo/__init__.py", "ANSWER = 42\n")
        z.writestr("demo-1.0.dist-info/RECORD", "demo/__init__.py,,\ndemo-1.0.dist-info/RECORD,,\n")
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    other = tmp_path / "other.whl"
    other.write_bytes(wheel.read_bytes())
    build.add_bytecode(other, "3.99")
    assert other.read_bytes() == wheel.read_bytes()
    build.add_bytecode(wheel, python)
    once = wheel.read_bytes()
    build.add_bytecode(wheel, python)
    assert wheel.read_bytes() == once
    tag = f"cpython-{python.replace('.', '')}"
    with zipfile.ZipFile(wheel) as z:
        pyc = f"demo/__pycache__/__init__.{tag}.pyc"
        rows = {row.split(",")[0]: row.split(",")[1:] for row in z.read("demo-1.0.dist-info/RECORD").decode().split()}
        assert rows[pyc] == [f"sha256={build.record_hash_of(z.read(pyc))}", str(len(z.read(pyc)))]
        z.extractall(tmp_path / "site")
    (tmp_path / "site" / "demo" / "__init__.py").write_text("ANSWER = 0\n")
    code = "import demo, sys; print(demo.ANSWER, demo.__cached__ is not None)"
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path / "site", capture_output=True, text=True)
    assert run.stdout.split() == ["42", "True"], run.stderr
