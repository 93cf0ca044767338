"""Scaled decoding of PNG and WebP through libvips (``pyvips``), where it is installed: 2x (PNG) and 4x (WebP)
faster than Pillow on photo-size files, in a fraction of the memory (bench/bench_photos.py).

libvips decodes the file row by row and shrinks on the fly (WebP: libwebp's scaled decoding; PNG: a box
reduce), so a 24-megapixel PNG never exists at full size in memory. It only ever runs after Pillow has
identified the file from its header: the allow-list and the pixel limit are Pillow's checks, and the
loader is named explicitly (no format sniffing by libvips). Anything outside the narrow case it handles
(8-bit RGB/RGBA, one frame) returns None and Pillow decodes the file as before; a libvips error does
too, so a damaged file gets Pillow's verdict.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np
from PIL import Image

#: Pillow modes libvips decodes to the same 8-bit pixels (16-bit, palette, grey, colour-keyed: Pillow).
_MODES = ("RGB", "RGBA")
_LOADERS = {"PNG": "pngload_buffer", "WEBP": "webpload_buffer"}


def _vips() -> Any:
    """``pyvips``, set up for this process, or None: not installed, no libvips library, or a forked child of the
    process that set it up (libvips' threads do not survive a fork: calling it there can hang)."""
    pid, vips = _setup()
    return vips if pid == os.getpid() else None


@functools.cache
def _setup() -> tuple[int, Any]:
    try:
        import pyvips
    except (ImportError, OSError):
        return os.getpid(), None
    pyvips.cache_set_max(0)  # every file is decoded once: a cache only holds memory
    pyvips.concurrency_set(1)  # one decode per worker process; the workers are the parallelism
    return os.getpid(), pyvips


def vips_version() -> str:
    """libvips' version, or "none" when the fast path is unavailable (part of the skip key)."""
    vips = _vips()
    return "none" if vips is None else f"{vips.version(0)}.{vips.version(1)}.{vips.version(2)}"


def handles(img: Image.Image) -> bool:
    """Whether ``decode`` can take this header-only Pillow image (format, mode, one frame)."""
    return (img.format in _LOADERS and img.mode in _MODES and "transparency" not in img.info
            and not getattr(img, "is_animated", False) and _vips() is not None)


def decode(data: bytes, fmt: str, size: tuple[int, int], min_side: int) -> tuple[Image.Image, int] | None:
    """``data`` decoded to RGB at the smallest integer shrink keeping both sides >= ``min_side``, with its EXIF
    orientation (1..8, not yet applied); None when libvips cannot (Pillow then decodes it and gives the verdict)."""
    vips = _vips()
    factor = max(1, min(size) // max(1, min_side))
    options: dict[str, Any] = {"access": "sequential", "fail_on": "warning"}
    if fmt == "WEBP" and factor > 1:
        options["scale"] = 1.0 / factor  # libwebp decodes at the reduced size directly
    try:
        image = getattr(vips.Image, _LOADERS[fmt])(data, **options)
        if image.format != "uchar" or image.bands not in (3, 4):
            return None
        orientation = image.get("orientation") if image.get_typeof("orientation") else 1
        if image.bands == 4:  # composited before the shrink: averaging first would bleed hidden colours into edges
            image = image.flatten(background=[255, 255, 255])
        if fmt == "PNG" and factor > 1:
            image = image.shrink(factor, factor)  # box filter, like Image.reduce
        pixels = np.ascontiguousarray(image.numpy(), dtype=np.uint8)
    except vips.Error:
        return None
    return Image.fromarray(pixels, "RGB"), orientation
