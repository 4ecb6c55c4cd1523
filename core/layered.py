"""The layered point map: World Tracing's output, and the `trace` .npz file format.

Axes: L layers (front to back), H×W pixels. Points are in OpenCV camera space
(x right, y down, z forward), in the units of the scene (metres for our data).
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .atomic import write_atomic

NPZ_LEVEL = 1  # deflate level of written traces: half the time of numpy's default for ~15 % more bytes

#: Keys every `trace` file holds, with their dtype and rank.
REQUIRED_KEYS = {
    "points": (np.float32, 4),  # (L, H, W, 3)
    "valid": (np.bool_, 3),  # (L, H, W)
    "intrinsics": (np.float32, 2),  # (3, 3)
    "image": (np.uint8, 3),  # (H, W, 3)
}


#: One colour per layer (RGB in [0, 1], repeating after 8), wherever layers are told apart by colour:
#: the figures, and the tint of hidden layers in Blender (where layer 0 shows the image itself).
LAYER_COLOURS = np.array(
    [
        [0.15, 0.15, 0.15],
        [0.35, 0.6, 1.0],
        [1.0, 0.45, 0.3],
        [0.4, 1.0, 0.45],
        [1.0, 0.9, 0.3],
        [0.8, 0.4, 1.0],
        [0.3, 1.0, 1.0],
        [1.0, 0.5, 0.8],
    ],
    dtype=np.float32,
)


class LayeredFileError(ValueError):
    """A layered point map (in memory or on disk) does not follow the format."""


@dataclass
class LayeredPointMap:
    """An ordered stack of per-pixel camera-space points.

    points:     (L, H, W, 3) float32, OpenCV camera space; zeros where not valid.
    valid:      (L, H, W) bool; layer k is valid where the ray has a (k+1)-th surface crossing.
    intrinsics: (3, 3) float32 pinhole matrix in pixels (pixel centres at +0.5).
    image:      (H, W, 3) uint8 RGB.
    extras:     further arrays saved alongside (e.g. `samples_points` (K, L, H, W, 3)).
    """

    points: np.ndarray
    valid: np.ndarray
    intrinsics: np.ndarray
    image: np.ndarray
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.points = np.ascontiguousarray(self.points, dtype=np.float32)
        self.valid = np.ascontiguousarray(self.valid, dtype=bool)
        self.intrinsics = np.ascontiguousarray(self.intrinsics, dtype=np.float32)
        self.image = np.ascontiguousarray(self.image)
        check_arrays(self.points, self.valid, self.intrinsics, self.image)

    @property
    def num_layers(self) -> int:
        return self.points.shape[0]

    @property
    def height(self) -> int:
        return self.points.shape[1]

    @property
    def width(self) -> int:
        return self.points.shape[2]

    @property
    def depth(self) -> np.ndarray:
        """(L, H, W) camera-space z, 0 where not valid."""
        return np.where(self.valid, self.points[..., 2], 0.0).astype(np.float32)

    def save(self, path: str | os.PathLike) -> None:
        """Write the `trace` .npz atomically (temporary file, then rename)."""
        arrays = dict(self.extras, points=self.points, valid=self.valid, intrinsics=self.intrinsics, image=self.image)
        write_atomic(path, lambda f: write_npz(f, arrays))

    @classmethod
    def load(cls, path: str | os.PathLike) -> LayeredPointMap:
        """Read and validate a `trace` .npz; raises LayeredFileError with the reason."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        except FileNotFoundError:
            raise LayeredFileError(f"{path}: no such file") from None
        except Exception as e:  # zip, header or pickle errors all mean "not our format"
            raise LayeredFileError(f"{path}: not a readable .npz file ({e})") from None
        missing = [k for k in REQUIRED_KEYS if k not in arrays]
        if missing:
            raise LayeredFileError(f"{path}: missing arrays {missing}")
        for key, (dtype, ndim) in REQUIRED_KEYS.items():
            a = arrays[key]
            if a.dtype != dtype or a.ndim != ndim:
                raise LayeredFileError(
                    f"{path}: '{key}' must be {np.dtype(dtype).name} with {ndim} dims, got {a.dtype} {a.shape}"
                )
        try:
            return cls(**{k: arrays.pop(k) for k in REQUIRED_KEYS}, extras=arrays)
        except LayeredFileError as e:
            raise LayeredFileError(f"{path}: {e}") from None


def check_arrays(points: np.ndarray, valid: np.ndarray, intrinsics: np.ndarray, image: np.ndarray) -> None:
    """Raise LayeredFileError unless the four arrays form a consistent layered point map."""
    if points.ndim != 4 or points.shape[-1] != 3 or points.shape[0] < 1:
        raise LayeredFileError(f"points must be (L, H, W, 3) with L >= 1, got {points.shape}")
    L, H, W, _ = points.shape
    if valid.shape != (L, H, W):
        raise LayeredFileError(f"valid must be {(L, H, W)} to match points, got {valid.shape}")
    if intrinsics.shape != (3, 3):
        raise LayeredFileError(f"intrinsics must be (3, 3), got {intrinsics.shape}")
    if image.shape != (H, W, 3) or image.dtype != np.uint8:
        raise LayeredFileError(f"image must be uint8 {(H, W, 3)}, got {image.dtype} {image.shape}")
    if not np.all(np.isfinite(intrinsics)) or intrinsics[0, 0] <= 0 or intrinsics[1, 1] <= 0:
        raise LayeredFileError(f"intrinsics need finite, positive focal lengths, got {intrinsics.tolist()}")
    for k in range(L):  # layer by layer: the temporaries stay one layer's size
        if not np.all(np.isfinite(points[k][valid[k]])):
            raise LayeredFileError("points hold NaN or inf at valid pixels")
        if k and np.any(valid[k] & ~valid[k - 1]):
            raise LayeredFileError(
                "a layer is valid where the layer before it is not (layers must be filled front to back)"
            )


def write_npz(file: BinaryIO, arrays: dict[str, np.ndarray]) -> None:
    """A compressed .npz (what np.load reads) of `arrays`, each streamed into the zip without a copy, at
    deflate level NPZ_LEVEL."""
    with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=NPZ_LEVEL) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
