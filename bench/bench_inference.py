"""CPU inference engines for the default embedder, side by side in one run: images/s of EfficientNet-Lite0
on random uint8 inputs, per engine, batch size and input size, with the same threads.

  * before: torch eager as imagerec ran it until issue 9 (the whole batch in one pass, glibc's default
    allocation: every big activation mmap'ed and unmapped per batch),
  * torch eager in passes of 16 images (``TorchEmbedder``), glibc's default allocation,
  * torch eager with imagerec's allocator setting (``embed.device.keep_large_allocations``),
  * ONNX Runtime (``embed.onnx_embedder``, what ``index`` and ``query`` use on the CPU).

Each engine runs in its own process, so the allocator setting of one cannot leak into another.

    .venv/bin/python bench/bench_inference.py                 # 224 px, batches 16 and 64, 2 threads
    .venv/bin/python bench/bench_inference.py --sizes 160,192,224 --batches 64
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ENGINES = ("before", "torch-default-malloc", "torch", "onnx")


def measure(engine: str, size: int, batch: int, threads: int, images: int) -> float:
    """Images/s of ``engine`` (runs inside the child process)."""
    import torch
    from bench_index import embed_rate

    from imagerec.embed import TorchEmbedder, pretrained_model
    from imagerec.embed.device import keep_large_allocations
    from imagerec.embed.onnx_embedder import onnx_embedder

    torch.set_num_threads(threads)
    if engine not in ("before", "torch-default-malloc"):
        keep_large_allocations()
    model = pretrained_model("efficientnet_lite0", size)
    with tempfile.TemporaryDirectory() as cache:
        embedder = onnx_embedder(model, Path(cache), threads) if engine == "onnx" else TorchEmbedder(model)
        inputs = np.random.default_rng(0).integers(0, 256, (images, size, size, 3), dtype=np.uint8)
        run = embedder._embed if engine == "before" else embedder.embed  # _embed: one pass, no chunks
        return embed_rate(run, inputs, batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="224")
    parser.add_argument("--batches", default="16,64")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--child", nargs=3, metavar=("ENGINE", "SIZE", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        engine, size, batch = args.child[0], int(args.child[1]), int(args.child[2])
        print(json.dumps(measure(engine, size, batch, args.threads, args.images)))
        return
    rows = [f"## EfficientNet-Lite0 CPU inference, {args.threads} threads, {args.images} images per point", "",
            "| input | batch | " + " | ".join(ENGINES) + " | onnx / before |", "|---|---|" + "---|" * (len(ENGINES) + 1)]
    for size in (int(s) for s in args.sizes.split(",")):
        for batch in (int(b) for b in args.batches.split(",")):
            rates = {}
            for engine in ENGINES:
                out = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--images", str(args.images),
                                      "--child", engine, str(size), str(batch)], capture_output=True, text=True, check=True)
                rates[engine] = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(f"| {size} px | {batch} | " + " | ".join(f"{rates[e]:.1f}" for e in ENGINES)
                        + f" | {rates['onnx'] / rates['before']:.2f} |")
            print(rows[-1], file=sys.stderr, flush=True)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
