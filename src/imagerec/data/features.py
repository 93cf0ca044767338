"""Hand-made image features: a joint colour histogram and a 64-bit difference hash (dHash).

Both are computed from the RGB image that ``loading`` produces, so indexed and query images go
through exactly the same code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

#: Longest side of the thumbnail the histogram is computed on (resolution-independent and cheap).
HISTOGRAM_SIDE = 128
HASH_BITS = 64


@dataclass(frozen=True, slots=True)
class HistogramSpec:
    """Which histogram: colour space and bins per channel (the joint histogram has bins**3 cells)."""

    space: str = "rgb"
    bins: int = 8

    @property
    def key(self) -> str:
        """Identifies what produced a stored histogram; a different key means recompute."""
        return f"{self.space}{self.bins}x{self.bins}x{self.bins}-box{HISTOGRAM_SIDE}"

    @property
    def size(self) -> int:
        return self.bins**3


def decode_min_side(model_size: int | None) -> int:
    """Smallest side a decoded image needs for the histogram, the hash and a ``model_size`` model input."""
    return max(model_size or 0, HISTOGRAM_SIDE // 2)


def color_histogram(image: Image.Image, spec: HistogramSpec) -> np.ndarray:
    """Joint 3-D colour histogram of an RGB image, flattened and L1-normalised (float32, ``bins**3``)."""
    factor = -(-max(image.size) // HISTOGRAM_SIDE)  # ceil: the longer side ends at most HISTOGRAM_SIDE
    thumb = image.reduce(factor) if factor > 1 else image  # box-filter reduce: ~4x cheaper than a resize
    if spec.space == "hsv":
        thumb = thumb.convert("HSV")
    pixels = np.asarray(thumb, dtype=np.uint8).reshape(-1, 3)
    return joint_histogram(pixels, spec.bins)


def joint_histogram(pixels: np.ndarray, bins: int) -> np.ndarray:
    """Histogram of an (N, 3) uint8 array over ``bins`` equal-width bins per channel, L1-normalised."""
    quantised = (pixels.astype(np.uint32) * bins) >> 8  # 0..bins-1 per channel
    cells = (quantised[:, 0] * bins + quantised[:, 1]) * bins + quantised[:, 2]
    counts = np.bincount(cells, minlength=bins**3).astype(np.float32)
    total = counts.sum()
    return counts / total if total else counts


def dhash(image: Image.Image) -> int:
    """64-bit difference hash: 9x8 grey thumbnail, one bit per pixel brighter than its left neighbour.

    Bit order is row-major with the first comparison as the most significant bit.
    """
    grey = image.convert("L").resize((9, 8), Image.Resampling.LANCZOS)
    pixels = np.asarray(grey, dtype=np.int16)
    bits = (pixels[:, 1:] > pixels[:, :-1]).ravel()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def hash_to_int64(value: int) -> int:
    """Unsigned 64-bit hash → signed int64 (SQLite INTEGER)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def hash_from_int64(value: int) -> int:
    """Signed int64 from SQLite → unsigned 64-bit hash."""
    return value + (1 << 64) if value < 0 else value
