"""wheels/build.py's check of what a zip imports: every import must be provided, unless it is optional."""

from __future__ import annotations

import importlib.util
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
