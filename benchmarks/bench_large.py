"""Large inputs: `python -m core trace` on a phone-photo-sized image against the same image at 185×125.

    python benchmarks/bench_large.py [--steps N]

Makes both sizes from the bundled sample (4000×2700 and 185×125, RGBA), traces each in its own process
with the shipped model and prints the wall time, the ratio and each process's peak resident memory.
The model's work is the same for both; what grows with the input is reading, framing, restoring the
layers at the input's size and writing the .npz.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"small": (185, 125), "phone": (4000, 2700)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wt-large-") as tmp:
        folder = Path(tmp)
        sample = Image.open(ROOT / "core" / "assets" / "sample.png")
        seconds = {}
        for name, size in SIZES.items():  # small first: the children's peak memory only grows
            image = folder / f"{name}.png"
            sample.resize(size).save(image)
            t0 = time.perf_counter()
            command = [sys.executable, "-m", "core", "trace", str(image), "--out", str(folder / f"{name}.npz")]
            subprocess.run([*command, "--steps", str(args.steps)], cwd=ROOT, check=True, capture_output=True)
            seconds[name] = time.perf_counter() - t0
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
            print(f"{size[0]}×{size[1]}: {seconds[name]:.2f} s, peak {peak:.2f} GB (whole process)")
    print(f"ratio: {seconds['phone'] / seconds['small']:.2f}× (target ≤ 2.5×)")


if __name__ == "__main__":
    main()
