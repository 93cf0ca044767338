"""A trained model embedding at sizes other than its training size ("test-time resolution"), through the CLI.

SimCLR's random resized crops (20-100 % of the area, resized to the training size) show objects larger
than the centre crop ``index`` feeds, so a model trained at 64 px may see test images best a little
larger. For each size, a sibling output dir gets ``--config``'s trained model file and a config with
``model.embed_size`` set to that size; ``index`` + ``build-ann`` + ``evaluate --labels <test split>`` run
there on all 9,144 Caltech-101 photos.

    .venv/bin/python bench/bench_test_resolution.py --sizes 64,80,96     # after the seed recipe's training
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from bench_finetune import log, output_dir, score, write_test_labels  # noqa: E402


def sized_config(config: Path, size: int) -> Path:
    """A copy of ``config`` in a sibling output dir (the trained model copied there) embedding at ``size`` px."""
    raw = yaml.safe_load(config.read_text())
    source = output_dir(config)
    target = source.parent / f"{source.name}_at_{size}"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source / "embedding_model.pt", target / "embedding_model.pt")
    raw["output"]["dir"] = str(target)
    raw["data"]["image_root"] = str((config.parent / raw["data"]["image_root"]).resolve())
    raw["model"]["embed_size"] = size
    raw.pop("train", None)
    path = target / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "bench" / "caltech101_train.yaml")
    parser.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")], default=[64, 80, 96])
    args = parser.parse_args()
    lines = ["| embedding size | index s | embedding P@1 | embedding P@10 | embedding mAP | fused P@10 | fused mAP |",
             "|---|---|---|---|---|---|---|"]
    for size in args.sizes:
        config = sized_config(args.config, size)
        log(f"{size} px: index, build-ann, evaluate")
        report = score(config, write_test_labels(config.parent / "labels_test_nobg.txt"))
        emb, fused = report["signals"]["embedding"], report["signals"]["fused"]
        lines.append(f"| {size} px | {report['index_s']:.0f} | {emb['p@1']:.3f} | {emb['p@10']:.3f} | {emb['map']:.3f} | "
                     f"{fused['p@10']:.3f} | {fused['map']:.3f} |")
        log(lines[-1])
    print("\n".join(lines))


if __name__ == "__main__":
    main()
