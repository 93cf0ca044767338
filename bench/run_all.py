"""All benchmarks in one run, one markdown report: every figure next to the baseline measured in the same run.

Stages (each is the bench script's own ``run()``, called with the arguments below):

1. index (bench_index.py): index without embeddings vs bare open+draft+convert; index with embeddings
   vs the model alone on pre-decoded inputs;
1b. photo-size index (bench_photos.py): the shared 8-24 MP photos replicated per format (JPEG, PNG, WebP, a mix);
   index vs the bare decoder loop, with the default embedder vs the shared-cores bound, Pillow-only vs default decoder;
2. training (bench_train.py): the real SimCLR loop vs the raw step ceiling;
3. ANN + query (bench_ann.py): the collection indexed in stage 1 padded with synthetic rows to N;
   recall@10 vs exact search, query --id latency vs exact brute-force fusion, external query latency.

    .venv/bin/python bench/run_all.py                  # default: ~1,000 photos, 20k ANN rows (< 10 min, 2 cores)
    .venv/bin/python bench/run_all.py --quick          # smoke run (~2 min)
    .venv/bin/python bench/run_all.py --full           # 9,144 photos, 550k ANN rows (hours on 2 cores)
    .venv/bin/python bench/run_all.py --train-args "--device cuda --images 5000 --batch-size 512"

Writes bench/out/report.md (``--out``) and prints it.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_ann  # noqa: E402
import bench_index  # noqa: E402
import bench_photos  # noqa: E402
import bench_train  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"

#: bench_photos.py args per size
PHOTO_PRESETS = {
    "quick": ["--per-format", "8", "--formats", "mixed", "--sizes", "224", "--repeat", "1", "--no-rss"],
    "default": ["--per-format", "40", "--sizes", "224", "--repeat", "1"],
    "full": ["--per-format", "100", "--splits", "2:2:idle,2:2:normal,1:2:normal,2:1:normal"],
}

#: (index args, train args, ANN args) per size
PRESETS = {
    "quick": (["--limit", "150", "--rss-sizes", "", "--image-size", "64"],
              ["--images", "128", "--batch-size", "32", "--image-size", "64", "--epochs", "2", "--ceiling-steps", "2"],
              ["--n", "3000", "--queries", "50", "--brute-queries", "5", "--external", "10"]),
    "default": (["--limit", "1000", "--rss-sizes", ""],
                ["--images", "512", "--batch-size", "64", "--epochs", "2", "--ceiling-steps", "3"],
                ["--n", "20000", "--queries", "200", "--brute-queries", "10", "--external", "30"]),
    "full": ([],
             ["--images", "5000", "--batch-size", "256"],
             ["--n", "550000", "--queries", "200", "--brute-queries", "10", "--external", "30"]),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="Smallest run (smoke test of the whole report).")
    size.add_argument("--full", action="store_true", help="Full-size runs: all Caltech-101 photos, 550k ANN rows.")
    ap.add_argument("--index-args", default="", help="Extra arguments for bench_index.py (override the preset).")
    ap.add_argument("--photo-args", default="", help="Extra arguments for bench_photos.py.")
    ap.add_argument("--train-args", default="", help="Extra arguments for bench_train.py.")
    ap.add_argument("--ann-args", default="", help="Extra arguments for bench_ann.py.")
    ap.add_argument("--skip", action="append", default=[], choices=["index", "photos", "train", "ann"], help="Leave a stage out.")
    ap.add_argument("--out", type=Path, default=OUT / "report.md")
    args = ap.parse_args()
    preset = "quick" if args.quick else "full" if args.full else "default"
    index_argv, train_argv, ann_argv = PRESETS[preset]

    started = time.perf_counter()
    machine = _machine()  # before the stages: their thread settings and load would colour it
    summary: list[tuple[str, str, float, str, float, str]] = []  # stage, figure, value, baseline, value, unit
    sections: list[str] = []
    with tempfile.TemporaryDirectory(prefix="imagerec-run-all-") as tmp:
        work = Path(tmp)
        if "index" not in args.skip or "ann" not in args.skip:
            _log("index benchmark")
            t0 = time.perf_counter()
            fig, text = bench_index.run(bench_index.parse_args(index_argv + shlex.split(args.index_args)), work / "index")
            sections.append(_section("index", text, time.perf_counter() - t0))
            summary += [("index", "index, no embeddings", fig["index_plain"], "bare open+draft+convert", fig["bare_decode"], "images/s"),
                        ("index", "index with embeddings", fig["index_embedded"], "model alone on decoded inputs", fig["model_only"], "images/s")]
        if "photos" not in args.skip:
            _log("photo-size index benchmark")
            t0 = time.perf_counter()
            fig, text = bench_photos.run(bench_photos.parse_args(PHOTO_PRESETS[preset] + shlex.split(args.photo_args)))
            sections.append(_section("photo-size index", text, time.perf_counter() - t0))
            summary.append(("photos", "index, no embeddings (mixed formats)", fig["photo_index_plain"],
                            "fastest bare decoder loop", fig["photo_bare"], "images/s"))
        if "train" not in args.skip:
            _log("training benchmark")
            t0 = time.perf_counter()
            fig, text = bench_train.run(bench_train.parse_args(train_argv + shlex.split(args.train_args)))
            sections.append(_section("training", text, time.perf_counter() - t0))
            summary.append(("train", "real training loop", fig["real_images_per_s"], "raw step ceiling",
                            fig["ceiling_images_per_s"], "images/s"))
        if "ann" not in args.skip:
            _log("ANN + query benchmark")
            t0 = time.perf_counter()
            ann_args = bench_ann.parse_args(ann_argv + shlex.split(args.ann_args))
            fig, text = bench_ann.run(work / "index" / "out", work / "ann", ann_args)
            sections.append(_section("ANN + query", text, time.perf_counter() - t0))
            summary += [("ann", "ANN recall@10", fig["recall@10"], "exact search", 1.0, ""),
                        ("query", "query --id p50 (ms)", fig["brute_p50_ms"], "exact brute-force fusion p50 (ms)",
                         fig["query_p50_ms"], "speed-up"),
                        ("query", "fused top-10 overlap", fig["fused_overlap"], "exact brute-force fusion", 1.0, "")]
            shutil.rmtree(work / "ann", ignore_errors=True)
    wall = time.perf_counter() - started
    report = _report(preset, machine, summary, sections, wall)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report + "\n", encoding="utf-8")
    print(report)
    _log(f"report written to {args.out} ({wall:.0f} s)")


def _report(preset: str, machine: str, summary, sections: list[str], wall: float) -> str:
    rows = []
    for stage, what, value, baseline, base_value, unit in summary:
        if unit == "speed-up":  # latency: the baseline is the slow one, report baseline / measured
            rows.append(f"| {stage} | {what.replace('query --id', 'exact fusion')} vs query --id | {value:.2f} | "
                        f"{base_value:.2f} | **{value / base_value:.1f}x faster** |")
        else:
            rows.append(f"| {stage} | {what} vs {baseline} | {value:.4g} {unit} | {base_value:.4g} {unit} | **{value / base_value:.2f}** |")
    return "\n".join([
        f"# imagerec benchmarks ({preset} preset)",
        "",
        f"{machine}; whole run {wall / 60:.1f} min. Command: `{' '.join(shlex.quote(a) for a in sys.argv)}`",
        "",
        "Every figure is a ratio to a baseline measured in the same run, on the same machine and data.",
        "",
        "| stage | figure vs baseline | measured | baseline | ratio |",
        "|---|---|---|---|---|",
        *rows,
        *sections,
    ])


def _section(name: str, text: str, seconds: float) -> str:
    return f"\n## {name} ({seconds:.0f} s)\n\n{text.strip()}"


def _machine() -> str:
    import torch

    return (f"{bench_train.machine(torch.device('cpu'), os.cpu_count() or 1)}, "
            f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM, {platform.system()} {platform.release()}")


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
