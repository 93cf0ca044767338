"""Benchmark `index` against its ceilings, side by side in one run, on the same files and worker count.

1. index without embeddings  vs  a bare loop that opens, draft()-decodes and converts the same images
   with the same number of processes (target ratio >= 0.80);
2. index with embeddings (CPU)  vs  the same model on pre-decoded tensors at the same input size,
   batch size and threads (target ratio >= 0.85);
3. peak RSS of `index` (main process, and main + workers) at two collection sizes (target: within 15%).

Usage:
    .venv/bin/python bench/bench_index.py                       # all 9,144 Caltech-101 photos
    .venv/bin/python bench/bench_index.py --limit 1000 --rss-sizes 300,1000   # quick check
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import psutil
import yaml
from PIL import Image

from imagerec.embed.base import Preprocess
from imagerec.data import loading
from imagerec.config import load_config
from imagerec.data.features import decode_min_side
from imagerec.indexing.run import index_collection
from imagerec.embed.device import select_device
from imagerec.embed import (ModelSpec, TorchEmbedder, load_model, pretrained_model, save_model, set_torch_threads,
                            write_random_model)
from imagerec.data.scan import scan_images

DEFAULT_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "caltech101" / "101_ObjectCategories"


def _bare_decode(paths: list[bytes], min_side: int) -> int:
    for path in paths:
        with Image.open(path) as img:
            img.draft("RGB", (min_side, min_side))
            img.convert("RGB")
    return len(paths)


def bare_decode_rate(files: list, workers: int, min_side: int, chunk: int = 32, decode=_bare_decode) -> float:
    """Images/s of ``decode(paths, min_side)`` (default: open + draft + convert) in a spawned process pool, pool
    start-up included, as in `index`; ``decode`` must be a module-level function returning how many it decoded."""
    started = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        chunks = [files[i : i + chunk] for i in range(0, len(files), chunk)]
        done = sum(pool.map(decode, chunks, [min_side] * len(chunks)))
    return done / (time.perf_counter() - started)


def write_config(folder: Path, image_root: Path, workers: int, batch_size: int) -> Path:
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump({
        "data": {"image_root": str(image_root)},
        "output": {"dir": str(folder / "out")},
        "runtime": {"device": "cpu"},
        "index": {"workers": workers, "batch_size": batch_size},
        "model": {"arch": "resnet18", "init": "random"},  # no model file = no embeddings; the model is copied in
    }))
    return path


def index_rate(config_path: Path, model_file: Path | None) -> tuple[float, int]:
    config = load_config(config_path)
    shutil.rmtree(config.output.dir, ignore_errors=True)
    config.output.dir.mkdir(parents=True)
    if model_file:
        shutil.copy(model_file, config.output.layout.model)
    summary = index_collection(config)
    return summary.processed / summary.elapsed_s, summary.processed


def model_only_rate(model_file: Path, files: list[bytes], batch_size: int, threads: int) -> float:
    """Images/s of the model alone on pre-decoded uint8 inputs (decode not timed)."""
    model = load_model(model_file)
    set_torch_threads(threads)
    embedder = TorchEmbedder(model, select_device("cpu"))
    return embed_rate(embedder.embed, predecoded(files, model.spec.image_size), batch_size)


def predecoded(files: list, size: int) -> np.ndarray:
    """The model inputs of ``files`` at ``size`` px, decoded as ``index`` decodes them: (N, size, size, 3) uint8."""
    settings = loading.LoadSettings(("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP"), 178_956_970, size)
    return np.stack([Preprocess(size)(loading.load_image(os.fsencode(f), settings).image) for f in files])


def embed_rate(embed, inputs: np.ndarray, batch_size: int) -> float:
    """Images/s of ``embed`` over ``inputs`` in batches (one warm-up batch first, not timed)."""
    embed(inputs[:batch_size])
    started = time.perf_counter()
    for i in range(0, len(inputs), batch_size):
        embed(inputs[i : i + batch_size])
    return len(inputs) / (time.perf_counter() - started)


def write_model(path: Path, arch: str, image_size: int) -> None:
    """A model file: random-init ResNet-18, or the ImageNet-pretrained EfficientNet-Lite0 the default config uses."""
    if arch == "resnet18":
        write_random_model(path, ModelSpec(image_size=image_size))
    else:
        model = pretrained_model(arch, image_size)
        save_model(path, model.backbone, model.spec, model.info)


def subset(images: Path, limit: int | None, into: Path) -> Path:
    """A folder with the first ``limit`` images (copied), or ``images`` itself."""
    if limit is None:
        return images
    target = into / f"subset{limit}"
    for n, scanned in enumerate(scan_images(images)):
        if n == limit:
            break
        dest = target / os.fsdecode(scanned.rel_path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(os.path.join(os.fsencode(images), scanned.rel_path), dest)
    return target


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--limit", type=int, help="use only the first N images")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=96, help="model input size")
    parser.add_argument("--arch", choices=["resnet18", "efficientnet_lite0"], default="resnet18",
                        help="resnet18: random init; efficientnet_lite0: its ImageNet weights (the default embedder)")
    parser.add_argument("--rss-sizes", default="1000,9144", help="collection sizes for the RSS comparison ('' to skip)")
    parser.add_argument("--out", type=Path, help="also write the markdown report here")
    return parser.parse_args(argv)


def main() -> None:
    report_main(parse_args, run)


def report_main(parse, run_fn) -> None:
    """A bench script's main: parse the command line, run, print the markdown report (and write it to --out)."""
    args = parse()
    _, text = run_fn(args)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


def run(args: argparse.Namespace, workdir: Path | None = None) -> tuple[dict[str, float], str]:
    """Index rates vs their ceilings (and peak RSS): (figures, markdown report). With ``workdir`` the
    indexed collection stays there (``workdir/out``: images.db + embedding_model.pt), else a temp folder is used."""
    threads = args.workers
    with tempfile.TemporaryDirectory(prefix="imagerec-bench-") as scratch:
        tmp = Path(workdir or scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        root = subset(args.images, args.limit, tmp)
        files = [os.path.join(os.fsencode(root), f.rel_path) for f in scan_images(root)]
        model_file = tmp / "model.pt"
        write_model(model_file, args.arch, args.image_size)
        config_path = write_config(tmp, root, args.workers, args.batch_size)

        bare = bare_decode_rate(files, args.workers, decode_min_side(None))
        plain, _ = index_rate(config_path, None)
        model_only = model_only_rate(model_file, files, args.batch_size, threads)
        embedded, _ = index_rate(config_path, model_file)

        rss_rows = []
        for size in (int(s) for s in args.rss_sizes.split(",") if s.strip()):
            sized_root = subset(args.images, size, tmp / f"rss{size}")
            sized_config = write_config(tmp / f"rss{size}", sized_root, args.workers, args.batch_size)
            count = sum(1 for _ in scan_images(sized_root))
            main_mb, tree_mb = peak_rss(sized_config, model_file)
            rss_rows.append((count, main_mb, tree_mb))

    report = [
        f"## index benchmark ({len(files)} images from {args.images.name}, {args.workers} workers, "
        f"batch {args.batch_size}, {args.arch} at {args.image_size} px)",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}",
        "",
        "| measurement | images/s | baseline images/s | ratio | target |",
        "|---|---|---|---|---|",
        f"| index, no embeddings vs bare open+draft+convert | {plain:.0f} | {bare:.0f} | {plain / bare:.2f} | >= 0.80 |",
        f"| index with embeddings (CPU) vs model only | {embedded:.1f} | {model_only:.1f} | {embedded / model_only:.2f} | >= 0.85 |",
        "",
        f"Projected time for 550,000 images on this machine: {550_000 / embedded / 3600:.1f} h with embeddings, "
        f"{550_000 / plain / 3600:.2f} h without.",
    ]
    if rss_rows:
        report += [
            "",
            "| images | peak RSS main (MiB) | peak RSS main + workers (MiB) |",
            "|---|---|---|",
            *[f"| {n} | {m:.0f} | {t:.0f} |" for n, m, t in rss_rows],
            "",
            f"RSS growth from {rss_rows[0][0]} to {rss_rows[-1][0]} images: main {rss_rows[-1][1] / rss_rows[0][1] - 1:+.1%}, "
            f"main + workers {rss_rows[-1][2] / rss_rows[0][2] - 1:+.1%} (target within 15%)",
        ]
    figures = {"images": len(files), "index_plain": plain, "bare_decode": bare, "index_embedded": embedded,
               "model_only": model_only}
    return figures, "\n".join(report)


def peak_rss(config_path: Path, model_file: Path) -> tuple[float, float]:
    """Run `imagerec index` (with a model) in a subprocess; peak RSS in MiB of main and of main + workers."""
    config = load_config(config_path)
    shutil.rmtree(config.output.dir, ignore_errors=True)
    config.output.dir.mkdir(parents=True)
    shutil.copy(model_file, config.output.layout.model)
    proc_args = [sys.executable, "-m", "imagerec", "--config", str(config_path), "index", "--quiet"]
    proc = subprocess.Popen(proc_args, stdout=subprocess.DEVNULL)
    handle = psutil.Process(proc.pid)
    main_peak = tree_peak = 0
    while proc.poll() is None:
        try:
            main = handle.memory_info().rss
            tree = main + sum(c.memory_info().rss for c in handle.children(recursive=True))
        except psutil.Error:
            break
        main_peak, tree_peak = max(main_peak, main), max(tree_peak, tree)
        time.sleep(0.05)
    if proc.wait() != 0:
        raise SystemExit(f"index failed for {config_path}")
    return main_peak / 2**20, tree_peak / 2**20


if __name__ == "__main__":
    main()
