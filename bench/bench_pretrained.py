"""The default embedder (ImageNet-pretrained EfficientNet-Lite0) on Caltech-101, through the real CLI.

Per input size (default 224, 192, 160), on a collection of the test split (2,893 images, BACKGROUND_Google
left out; a folder of symlinks indexed with follow_symlinks):
  * `index` wall time and images/s, against the same embedder alone on pre-decoded inputs at the same size,
    batch and threads (model-only ceiling, measured in the same run);
  * `evaluate` (leave-one-out, labels = folders): P@10 / mAP of the embedding alone and of the default fusion.
With --tune, also on all 9,144 photos at the default size: `evaluate --labels train --tune-weights --metric p@10`
(weights chosen on train-split queries only), `evaluate --labels test` with the default weights, and
`evaluate --near-duplicates`.

    .venv/bin/python bench/bench_pretrained.py                      # sizes table (about 10 min here)
    .venv/bin/python bench/bench_pretrained.py --sizes 224 --tune   # + weight tuning and near-duplicates
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
CALTECH = REPO.parent / "shared" / "data" / "caltech101"
OUT = REPO / "bench" / "out" / "pretrained"
EXCLUDED = "BACKGROUND_Google"


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def split_list(name: str) -> list[str]:
    return [p for p in (CALTECH / name).read_text().split() if not p.startswith(EXCLUDED + "/")]


def test_folder() -> Path:
    """A folder of symlinks to the test split's images (class folders kept)."""
    root = OUT / "test_images"
    for rel in split_list("test.txt"):
        link = root / rel
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(CALTECH / "101_ObjectCategories" / rel)
    return root


def write_config(folder: Path, image_root: Path, size: int, args) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump({
        "data": {"image_root": str(image_root)}, "output": {"dir": str(folder / "out")},
        "runtime": {"device": "cpu", "threads": args.threads},
        "index": {"workers": args.workers, "batch_size": args.batch_size, "follow_symlinks": True},
        "model": {"arch": "efficientnet_lite0", "init": "imagenet", "input_size": size},
    }))
    return path


def imagerec(config: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "imagerec", "--config", str(config), *args],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"imagerec {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def index_timed(config: Path) -> tuple[float, int]:
    """(seconds, images) of a fresh `index` run, model loading included."""
    out = yaml.safe_load(config.read_text())["output"]["dir"]
    subprocess.run(["rm", "-rf", out], check=True)
    started = time.perf_counter()
    text = imagerec(config, "index", "-q")
    elapsed = time.perf_counter() - started
    return elapsed, int(text.split(" new")[0].split()[-1])


def model_only_rates(size: int, files: list[Path], batch: int, threads: int) -> dict[str, float]:
    """Images/s of the pretrained embedder alone on pre-decoded inputs, per engine: ONNX Runtime (what
    `index` uses, the ceiling it is held to) and torch eager (channels_last, inference_mode)."""
    import tempfile

    from bench_index import embed_rate, predecoded

    from imagerec.embed import TorchEmbedder, pretrained_model, set_torch_threads
    from imagerec.embed.onnx_embedder import onnx_embedder

    set_torch_threads(threads)
    model = pretrained_model("efficientnet_lite0", size)
    inputs = predecoded(files, size)
    with tempfile.TemporaryDirectory() as cache:
        engines = {"onnx": onnx_embedder(model, Path(cache), threads), "torch": TorchEmbedder(model)}
        return {name: embed_rate(embedder.embed, inputs, batch) for name, embedder in engines.items()}


def query_p50_ms(config, images: list[Path]) -> float:
    """Median wall time of ``query --image`` (decode, embed, ANN, re-rank) with the model loaded, in-process,
    for images outside the collection (so each one is really embedded). ``config``: a file or a ``Config``."""
    from imagerec.config import load_config
    from imagerec.search.recommender import Recommender

    with Recommender(config if not isinstance(config, Path) else load_config(config)) as rec:
        rec.embedder  # noqa: B018 - load the model outside the timing
        rec.search(images=[images[0]], top_k=10)
        times = []
        for path in images[1:]:
            started = time.perf_counter()
            rec.search(images=[path], top_k=10)
            times.append(time.perf_counter() - started)
    return 1000 * float(np.median(times))


def sizes_table(args) -> list[str]:
    root = test_folder()
    files = sorted(p for p in root.rglob("*.jpg"))[:: max(1, 2893 // args.model_only_images)]
    outside = [CALTECH / "101_ObjectCategories" / rel for rel in split_list("train.txt")[::200]]
    rows = ["| input | index s | index images/s | model only, ONNX Runtime | ratio | model only, torch eager | "
            "550k projected | query --image p50 | embedding P@10 | embedding mAP | fused P@10 | fused mAP |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for size in args.sizes:
        config = write_config(OUT / f"test_{size}", root, size, args)
        log(f"{size} px: model only on {len(files)} images")
        rates = model_only_rates(size, files, args.batch_size, args.threads)
        ceiling = rates["onnx"]
        log(f"{size} px: index")
        seconds, n = index_timed(config)
        log(f"{size} px: {n} images indexed in {seconds:.1f} s; model only {rates}")
        imagerec(config, "build-ann")
        p50 = query_p50_ms(config, outside)
        report = json.loads(imagerec(config, "evaluate", "--json"))
        emb, fused = report["signals"]["embedding"], report["signals"]["fused"]
        rate = n / seconds
        rows.append(f"| {size} px | {seconds:.0f} | {rate:.1f} | {ceiling:.1f} | {rate / ceiling:.2f} | {rates['torch']:.1f} | "
                    f"{550_000 / rate / 3600:.1f} h | {p50:.0f} ms | {emb['p@10']:.3f} | {emb['map']:.3f} | "
                    f"{fused['p@10']:.3f} | {fused['map']:.3f} |")
        log(rows[-1])
    return rows


def tuning(args) -> list[str]:
    size = args.sizes[0]
    config = write_config(OUT / f"all_{size}", CALTECH / "101_ObjectCategories", size, args)
    lists = {}
    for name in ("train", "test"):
        lists[name] = OUT / f"labels_{name}_nobg.txt"
        lists[name].write_text("\n".join(split_list(f"{name}.txt")) + "\n")
    log(f"all photos at {size} px: index")
    started = time.perf_counter()
    n = int(imagerec(config, "index", "-q").split(" new")[0].split()[-1])  # incremental: a re-run adds nothing
    seconds = time.perf_counter() - started
    imagerec(config, "build-ann")
    log("tuning on train-split queries")
    tuned = json.loads(imagerec(config, "evaluate", "--labels", str(lists["train"]), "--tune-weights", "--grid-step",
                                str(args.grid_step), "--sample", str(args.tune_queries), "--metric", "p@10", "--json"))
    (OUT / "tuning.json").write_text(json.dumps(tuned, indent=2))
    log(f"tuned: {tuned['tuning']['best_weights']}")
    log("test split with the default weights")
    test = json.loads(imagerec(config, "evaluate", "--labels", str(lists["test"]), "--json"))
    t = tuned["tuning"]
    lines = [f"Index of all photos at {size} px: {n} new in {seconds:.0f} s (0 new: the collection was already indexed).", "",
             f"Tuning on train-split queries (grid {t['step']}, P@10; {t['val_queries']} validation / "
             f"{t['test_queries']} held-out train queries): best {t['best_weights']} "
             f"(val {t['validation']}, held out {t['test']}); default {t['configured_weights']}.", "",
             "| test split, default weights | P@1 | P@10 | mAP |", "|---|---|---|---|"]
    for signal in ("embedding", "color", "dhash", "fused"):
        s = test["signals"][signal]
        lines.append(f"| {signal} | {s['p@1']:.3f} | {s['p@10']:.3f} | {s['map']:.3f} |")
    lines += ["", "Near-duplicates (`evaluate --near-duplicates --edits 100`):", "", "```",
              imagerec(config, "evaluate", "--near-duplicates", "--edits", "100").rstrip(), "```"]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")], default=[224, 192, 160])
    parser.add_argument("--tune", action="store_true", help="Also tune weights and run near-duplicates on all photos.")
    parser.add_argument("--no-sizes", action="store_true", help="Skip the sizes table.")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--model-only-images", type=int, default=512)
    parser.add_argument("--grid-step", type=float, default=0.05, help="Weight grid step for --tune.")
    parser.add_argument("--tune-queries", type=int, default=6096, help="Train-split queries sampled for --tune.")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    lines = [f"## pretrained EfficientNet-Lite0 on Caltech-101 ({args.workers} workers, {args.threads} threads, "
             f"batch {args.batch_size}, CPU)", ""]
    if not args.no_sizes:
        lines += sizes_table(args) + [""]
    if args.tune:
        lines += tuning(args)
    text = "\n".join(lines)
    print(text)
    (OUT / "report.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
