"""Benchmark ``index --executor ray`` against the local executor on the same photos, and project a GPU actor pool.

Both runs are the real command (``python -m imagerec ... index``) in a fresh process on a fresh output
folder with the default embedder (pretrained EfficientNet-Lite0), so each wall time includes start-up:
model loading, and for Ray a local instance (``ray.init``), worker and actor start-up. Then, for the
projection, two ceilings measured in this process: decode + features + preprocessing per core
(``decode_one``, the function both executors run), and the model alone on pre-decoded inputs. The Ray
run keeps its shards, and ``ingest`` of them into a fresh collection is timed too (the share of a Ray
run spent writing SQLite).

Usage:
    .venv/bin/python bench/bench_ray.py                    # all 9,144 Caltech-101 photos
    .venv/bin/python bench/bench_ray.py --limit 500        # quick check (a copy of the first 500 photos)
    .venv/bin/python bench/bench_ray.py --repeat 3         # alternate the two runs 3 times (a shared machine)
Writes bench/out/ray.json (and prints the same numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

DEFAULT_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "caltech101" / "101_ObjectCategories"
OUT = Path(__file__).resolve().parent / "out"


def write_config(folder: Path, image_root: Path, batch_size: int) -> Path:
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump({
        "data": {"image_root": str(image_root)}, "output": {"dir": str(folder / "out")},
        "runtime": {"device": "cpu"}, "index": {"batch_size": batch_size, "ray": {"keep_shards": True}},
    }))
    return path


def timed_index(config: Path, *extra: str) -> dict:
    """Wall time and the summary line of one ``index`` (or ``ingest``) run in a fresh process."""
    command = [sys.executable, "-m", "imagerec", "--config", str(config), *(extra or ["index"]), "-q"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    processed = int(re.search(r"^(\d+) images in", done.stdout, re.MULTILINE).group(1))
    return {"command": " ".join(command[1:]), "wall_s": round(wall, 1), "processed": processed,
            "images_per_s": round(processed / wall, 1), "summary": done.stdout.strip().splitlines()}


def ceilings(config_path: Path, n: int) -> dict:
    """Decode + features + preprocessing per core (``decode_one``), and the model alone on pre-decoded inputs."""
    from imagerec.config import load_config
    from imagerec.indexing.decode import decode_one
    from imagerec.indexing.plan import WorkItem
    from imagerec.indexing.run import index_settings, load_index_embedder

    config = load_config(config_path)
    embedder = load_index_embedder(config)
    settings = index_settings(config, embedder)
    files = [f for _, f in zip(range(n), settings.scan.files())]
    started = time.perf_counter()
    decoded = [decode_one(WorkItem(f, None, False), settings.decode) for f in files]
    decode_rate = len(files) / (time.perf_counter() - started)
    batch = np.stack([d.pixels for d in decoded if d.pixels is not None][:config.index.batch_size])
    embedder.embed(batch)  # warm-up
    started, rounds = time.perf_counter(), 5
    for _ in range(rounds):
        embedder.embed(batch)
    model_rate = rounds * len(batch) / (time.perf_counter() - started)
    return {"model_id": embedder.model_id, "decode_per_core_images_per_s": round(decode_rate, 1),
            "model_cpu_images_per_s": round(model_rate, 1), "model_batch": len(batch),
            "model_threads": config.runtime.threads or os.cpu_count()}


def compare(tmp: Path, images: Path, batch_size: int) -> dict:
    """One local run, one Ray run (keeping its shards) and one ``ingest`` of those shards, each on a fresh folder."""
    run = {"load_before": os.getloadavg()[0]}
    for name, extra in (("local", ()), ("ray", ("index", "--executor", "ray")), ("ingest", ("ingest",))):
        folder = tmp / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        if name == "ingest":  # the shards the Ray run kept
            extra += tuple(str(p) for p in (tmp / "ray" / "out" / "distributed").glob("*/shards"))
        run[name] = timed_index(write_config(folder, images, batch_size), *extra)
        print(name, json.dumps(run[name]), flush=True)
    run["ray_over_local"] = round(run["ray"]["images_per_s"] / run["local"]["images_per_s"], 3)
    run["load_after"] = os.getloadavg()[0]
    return run


def subset(source: Path, limit: int, into: Path) -> Path:
    """A copy of the first ``limit`` photos of ``source`` (sorted), keeping their folders."""
    photos = sorted(p for p in source.rglob("*") if p.is_file())[:limit]
    for photo in photos:
        target = into / photo.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(photo, target)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--limit", type=int, help="index a copy of the first N photos only")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--ceiling-images", type=int, default=300, help="photos for the decode and model ceilings")
    parser.add_argument("--repeat", type=int, default=1, help="alternate local and Ray runs this many times (median)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_ray_") as tmp:
        tmp = Path(tmp)
        images = subset(args.images, args.limit, tmp / "photos") if args.limit else args.images
        results = {"host": platform.node(), "cpus": os.cpu_count(), "images": str(images), "runs": []}
        for _ in range(args.repeat):
            results["runs"].append(compare(tmp, images, args.batch_size))
        ratios = sorted(run["ray_over_local"] for run in results["runs"])
        results["ray_over_local_median"] = ratios[len(ratios) // 2]
        results["ceilings"] = ceilings(write_config(tmp / "local", images, args.batch_size), args.ceiling_images)
    OUT.mkdir(exist_ok=True)
    (OUT / "ray.json").write_text(json.dumps(results, indent=2))
    print(json.dumps({k: v for k, v in results.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
