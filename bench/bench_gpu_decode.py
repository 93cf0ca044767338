"""Measure batched JPEG decoding on the GPU (torchvision.io.decode_jpeg(..., device="cuda")) feeding the default
embedder without a host round trip, against the CPU path `index` uses (Pillow draft + preprocess). Needs CUDA:
without it the script says so and exits 0 (nothing is built into `index` yet; this decides whether to).

    .venv/bin/python bench/bench_gpu_decode.py --images ../shared/data/large-photos --batch 32 --repeat 3
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=SHARED / "large-photos")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("bench_gpu_decode: needs a CUDA device (torch.cuda.is_available() is False); nothing measured.")
        return
    files = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    files = (files * (args.batch // max(1, len(files)) + 1))[: args.batch]
    gpu = best(args.repeat, gpu_rate, files, args.size)
    cpu = best(args.repeat, cpu_rate, files, args.size)
    print(f"| path | images/s ({len(files)} JPEGs, {args.size} px, {torch.cuda.get_device_name()}) |\n|---|---|\n"
          f"| CPU: read + Pillow draft + preprocess (1 process) | {cpu:.1f} |\n"
          f"| GPU: read + decode_jpeg(device='cuda') batch + resize on the GPU | {gpu:.1f} |")


def best(repeat: int, fn, *args) -> float:
    return max(fn(*args) for _ in range(repeat))


def gpu_rate(files: list[Path], size: int) -> float:
    """JPEG bytes → nvJPEG batch decode → centre-square resize on the GPU: the embedder's (N, 3, S, S) input."""
    import torch
    import torch.nn.functional as F
    from torchvision.io import ImageReadMode, decode_jpeg

    torch.cuda.synchronize()
    started = time.perf_counter()
    data = [torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in files]
    images = decode_jpeg(data, mode=ImageReadMode.RGB, device="cuda")
    batch = []
    for image in images:
        _, h, w = image.shape
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        square = image[:, top: top + side, left: left + side].unsqueeze(0).float()
        batch.append(F.interpolate(square, size=(size, size), mode="bilinear", antialias=True))
    torch.cat(batch)
    torch.cuda.synchronize()
    return len(files) / (time.perf_counter() - started)


def cpu_rate(files: list[Path], size: int) -> float:
    from imagerec.data import loading
    from imagerec.embed.base import Preprocess

    settings = loading.LoadSettings(("JPEG",), 178_956_970, size)
    started = time.perf_counter()
    np.stack([Preprocess(size)(loading.load_image(p, settings).image) for p in files])
    return len(files) / (time.perf_counter() - started)


if __name__ == "__main__":
    sys.exit(main())
