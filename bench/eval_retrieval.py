"""Retrieval quality on Caltech-101's test split: P@10 and mAP, leave-one-out, class = folder.

Compares model files, a randomly initialised ResNet-18 and the joint RGB 8x8x8 colour histogram
(Bhattacharyya = cosine of the square-rooted histogram). BACKGROUND_Google is excluded.

    .venv/bin/python bench/eval_retrieval.py --model data/caltech101/embedding_model.pt
    .venv/bin/python bench/eval_retrieval.py --limit 200          # quick check
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "caltech101"
EXCLUDED = {"BACKGROUND_Google"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Caltech-101 folder with 101_ObjectCategories/ and test.txt.")
    parser.add_argument("--split", default="test.txt")
    parser.add_argument("--model", type=Path, action="append", default=[], help="Model file to score (repeatable).")
    parser.add_argument("--random-size", type=int, default=96, help="Input size of the random-init baseline.")
    parser.add_argument("--random-stem", choices=["imagenet", "small"], default="imagenet")
    parser.add_argument("--limit", type=int, default=None, help="Only N images spread evenly over the split (quick checks).")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    from imagerec.embed import ModelSpec, TorchEmbedder, load_model, select_device, set_torch_threads, write_random_model
    from imagerec.eval.metrics import retrieval_scores

    rel_paths = [p for p in (args.data / args.split).read_text().split() if p.split("/", 1)[0] not in EXCLUDED]
    if args.limit and args.limit < len(rel_paths):  # an even spread over the classes, not the first few
        rel_paths = [rel_paths[i * len(rel_paths) // args.limit] for i in range(args.limit)]
    device = select_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        random_path = Path(tmp) / "random.pt"
        write_random_model(random_path, ModelSpec(stem=args.random_stem, image_size=args.random_size), seed=0)
        models = [(f"ResNet-18 random init ({args.random_stem} stem, {args.random_size} px)", load_model(random_path))]
        for path in args.model:
            model = load_model(path)
            info = model.info
            what = (f"{path} ({model.spec.stem} stem, {model.spec.image_size} px, {info.get('epochs', '?')} epochs on "
                    f"{info.get('train_images', '?')} images, {info.get('wall_s', 0) / 60:.0f} min)")
            models.append((what, model))
        sizes = sorted({m.spec.image_size for _, m in models})
        t0 = time.perf_counter()
        hists, pixels, labels, failed = decode_all(args.data / "101_ObjectCategories", rel_paths, sizes, args.workers)
        decode_s = time.perf_counter() - t0
        rows = [("joint RGB 8x8x8 colour histogram, Bhattacharyya", retrieval_scores(np.sqrt(hists), labels, 10), 0.0)]
        for what, model in models:
            t0 = time.perf_counter()
            set_torch_threads(None, device)
            embedder = TorchEmbedder(model, device)
            batch = pixels[model.spec.image_size]
            vectors = np.concatenate([embedder.embed(batch[i:i + 64]) for i in range(0, len(batch), 64)])
            rows.append((what, retrieval_scores(vectors, labels, 10), time.perf_counter() - t0))
    print(f"\nCaltech-101 {args.split}: {len(labels)} images in {len(set(labels.tolist()))} classes "
          f"(BACKGROUND_Google excluded, {failed} undecodable), leave-one-out; decode {decode_s:.1f} s; device {device}\n")
    print("| embedding | P@10 | mAP | embed s |")
    print("|---|---|---|---|")
    for what, scores, seconds in rows:
        print(f"| {what} | {scores.precision_at_k:.3f} | {scores.mean_average_precision:.3f} | {seconds:.1f} |")


def decode_all(root: Path, rel_paths: list[str], sizes: list[int], workers: int):
    chunks = [rel_paths[i:i + 32] for i in range(0, len(rel_paths), 32)]
    job = (str(root), sizes)
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        results = [r for chunk in pool.map(_decode_chunk, chunks, [job] * len(chunks)) for r in chunk]
    good = [r for r in results if r is not None]
    hists = np.stack([r[1] for r in good])
    pixels = {s: np.stack([r[2][s] for r in good]) for s in sizes}
    labels = np.asarray([r[0].split("/", 1)[0] for r in good])
    return hists, pixels, labels, len(results) - len(good)


def _decode_chunk(chunk: list[str], job):
    from imagerec.data import loading
    from imagerec.config import DEFAULT_FORMATS
    from imagerec.errors import ImageLoadError
    from imagerec.embed.base import Preprocess
    from imagerec.data.features import HistogramSpec, color_histogram

    root, sizes = job
    settings = loading.LoadSettings(DEFAULT_FORMATS, 178_956_970, max(max(sizes), 64))
    out = []
    for rel in chunk:
        try:
            image = loading.load_path(Path(root) / rel, settings).image
        except ImageLoadError as exc:
            print(f"skipping {rel}: {exc}", file=sys.stderr)
            out.append(None)
            continue
        out.append((rel, color_histogram(image, HistogramSpec("rgb", 8)), {s: Preprocess(s)(image) for s in sizes}))
    return out


if __name__ == "__main__":
    main()
