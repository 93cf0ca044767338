"""SimCLR fine-tuning of the default embedder on Caltech-101's train split, scored on its test split, through the CLI.

With the config (default ``bench/caltech101_finetune.yaml``, all 9,144 photos under ``data.image_root``):
  1. ``index`` + ``build-ann`` + ``evaluate --labels <test split>`` with the pretrained start (no model file yet),
  2. ``train-embeddings`` (train split only; labels unused except validation P@10 choosing the epoch),
  3. ``index`` (re-embeds with the fine-tuned model) + ``build-ann`` + the same ``evaluate``,
and prints one table: test-split P@1 / P@10 / mAP of the embedding and the default fusion, before and after,
with the training wall time. BACKGROUND_Google is left out of the test labels.

    .venv/bin/python bench/bench_finetune.py                          # about 70 min on 2 CPU cores
    .venv/bin/python bench/bench_finetune.py --no-train               # score the output dir's current model only
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from bench_pretrained import imagerec, log, split_list  # noqa: E402


def output_dir(config: Path) -> Path:
    raw = yaml.safe_load(config.read_text())
    return (config.parent / raw["output"]["dir"]).resolve()


def write_test_labels(path: Path) -> Path:
    """The test split's paths without BACKGROUND_Google, one per line, at ``path``."""
    path.write_text("\n".join(split_list("test.txt")) + "\n")
    return path


def score(config: Path, labels: Path) -> dict:
    """Index (only what changed), rebuild the ANN index and its whitening, evaluate on ``labels``."""
    started = time.perf_counter()
    imagerec(config, "index", "-q")
    index_s = time.perf_counter() - started
    imagerec(config, "build-ann")
    report = json.loads(imagerec(config, "evaluate", "--labels", str(labels), "--json"))
    report["index_s"] = index_s
    return report


def row(name: str, report: dict) -> str:
    emb, fused = report["signals"]["embedding"], report["signals"]["fused"]
    return (f"| {name} | {emb['p@1']:.3f} | {emb['p@10']:.3f} | {emb['map']:.3f} | {fused['p@10']:.3f} | "
            f"{fused['map']:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "bench" / "caltech101_finetune.yaml")
    parser.add_argument("--no-train", action="store_true", help="Only score the model the output dir holds now.")
    args = parser.parse_args()
    out = output_dir(args.config)
    out.mkdir(parents=True, exist_ok=True)
    labels = write_test_labels(out / "labels_test_nobg.txt")
    lines = ["| test split (2,893 queries) | embedding P@1 | embedding P@10 | embedding mAP | fused P@10 | fused mAP |",
             "|---|---|---|---|---|---|"]
    if not args.no_train:
        log("pretrained start: index, build-ann, evaluate")
        lines.append(row("pretrained start", score(args.config, labels)))
        log("train-embeddings")
        started = time.perf_counter()
        log(imagerec(args.config, "train-embeddings").rstrip())
        log(f"training wall time: {(time.perf_counter() - started) / 60:.1f} min")
    log("current model: index, build-ann, evaluate")
    model = "fine-tuned" if (out / "embedding_model.pt").exists() else "pretrained (no epoch beat the start)"
    lines.append(row(model, score(args.config, labels)))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
