"""Memory bound of one decode: a 24-megapixel RGBA PNG must not push a worker process past the stated limit
(libvips decodes it row by row and shrinks on the fly; Pillow alone holds ~470 MiB for it)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from PIL import Image

#: Stated limit: what decoding one 24-MP PNG may add to a worker's peak RSS (measured: ~52 MiB; Pillow: ~474 MiB).
MAX_DECODE_MIB = 128

_PEAK = """
import sys
from imagerec.data import loading
settings = loading.LoadSettings(("PNG",), 178_956_970, 224, True, sys.argv[2])
if sys.argv[1]:
    image = loading.load_image(sys.argv[1], settings).image
    assert min(image.size) >= 224, image.size
print(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")))
"""


def _peak_kib(path: str, decoder: str) -> int:
    out = subprocess.run([sys.executable, "-c", _PEAK, path, decoder], capture_output=True, text=True, check=True)
    return int(out.stdout)


def test_24_megapixel_png_stays_within_the_worker_memory_limit(tmp_path):
    x = np.linspace(0, 255, 6000, dtype=np.float32)
    y = np.linspace(0, 255, 4000, dtype=np.float32)[:, None]
    rgba = np.stack([np.broadcast_to(x, (4000, 6000)), np.broadcast_to(y, (4000, 6000)),
                     (x + y) % 256, np.full((4000, 6000), 200, np.float32)], axis=-1).astype(np.uint8)
    path = tmp_path / "photo_24mp.png"
    Image.fromarray(rgba, "RGBA").save(path, compress_level=1)
    del rgba
    idle = _peak_kib("", "auto")
    assert (_peak_kib(str(path), "auto") - idle) / 1024 <= MAX_DECODE_MIB
    assert (_peak_kib(str(path), "pillow") - idle) / 1024 > MAX_DECODE_MIB  # the bound is not met by accident
