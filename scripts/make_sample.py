"""Write the bundled sample image (core/assets/sample.png) from our own Blender engine.

    python -m core generate --out data/sample512 --count 12 --seed 7 --resolution 512 --workers 1
    python scripts/make_sample.py data/sample512 INDEX

Seed 7 is disjoint from the training (1) and held-out (2) seeds. The image keeps its alpha
(the object model's foreground).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.assets import SAMPLE_IMAGE
from core.data.shards import ShardReader


def main() -> None:
    folder, index = sys.argv[1], int(sys.argv[2])
    reader = ShardReader(folder)
    rgba = np.dstack([reader.rgb[index], reader.alpha[index]])
    SAMPLE_IMAGE.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgba).save(SAMPLE_IMAGE, optimize=True)
    print(f"wrote {SAMPLE_IMAGE} from sample {int(reader.index[index])} of {folder}")


if __name__ == "__main__":
    main()
