"""The same-photo tier of ``query`` (``query.same_photo_top`` / ``query.same_photo_min_correlation``), measured.

On an indexed collection (``--config``; the Caltech-101 numbers in docs/benchmarks.md use all 9,144 photos
with the default pretrained embedder, ``index`` + ``build-ann`` run before), for the tier off and each
threshold in ``--thresholds``, side by side in one process:

* near-duplicates: ``evaluate --near-duplicates``' own benchmark (same photos, same edits, seed 0); the
  "query" column is what ``query --image`` returns, so it is the one the tier changes;
* category neighbours: P@10 of ``query --id`` for ``--queries`` seeded test-split photos (class = folder),
  so that a tier promoting look-alikes would show as a loss; run twice, for the mean time per query with
  the thumbnail cache cold (first pass; start with an empty ``output.dir/cache/thumbs``) and warm;
* ``query --image`` p50 latency (model loaded), outside copies of ``--queries`` // 10 photos.

    .venv/bin/python bench/bench_same_photo.py --config <collection config> --thresholds 0.93,0.95,0.96,0.97
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from bench_pretrained import log, query_p50_ms, split_list  # noqa: E402
from imagerec.config import Config, load_config  # noqa: E402
from imagerec.eval.near_duplicates import near_duplicate_benchmark  # noqa: E402
from imagerec.search.recommender import Recommender  # noqa: E402
from imagerec.store.records import absolute_path  # noqa: E402

EDITS = ("crop10", "crop30", "crop50", "rescale0.5", "jpeg20-30", "rotate2-5", "brightness-contrast", "hflip", "border", "text")


def with_tier(config: Config, top: int, threshold: float) -> Config:
    query = config.query.model_copy(update={"same_photo_top": top, "same_photo_min_correlation": threshold})
    return config.model_copy(update={"query": query})


def test_ids(config: Config, count: int) -> list[tuple[int, str]]:
    """(id, class) of ``count`` seeded test-split photos of the collection."""
    wanted = set(split_list("test.txt"))
    with Recommender(config) as rec:
        rows = rec.store.get_features(rec.store.embedding_ids(rec.model_id).tolist(), rec.model_id)
        paths = [(int(i), p.decode()) for i, p in zip(rows.ids, rows.paths) if p.decode() in wanted]
    picked = np.random.default_rng(0).choice(len(paths), size=min(count, len(paths)), replace=False)
    return [(paths[i][0], paths[i][1].split("/")[0]) for i in sorted(picked)]


def category_p10(config: Config, queries: list[tuple[int, str]]) -> tuple[float, float]:
    """Mean P@10 of ``query --id`` over ``queries`` (class = first folder) and the mean seconds per query."""
    hits, started = [], time.perf_counter()
    with Recommender(config) as rec:
        for image_id, label in queries:
            results = rec.query([rec.image_by_id(image_id)], top_k=10).results
            hits.append(np.mean([r.relpath.split("/")[0] == label for r in results]))
    return float(np.mean(hits)), (time.perf_counter() - started) / len(queries)


def outside_copies(config: Config, queries: list[tuple[int, str]], folder: Path) -> list[Path]:
    with Recommender(config) as rec:
        rows = rec.store.get_features([i for i, _ in queries], rec.model_id)
    files = []
    for n, rel in enumerate(rows.paths):
        target = folder / f"{n}_{Path(rel.decode()).name}"
        shutil.copy(absolute_path(config.data.image_root, rel), target)
        files.append(target)
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--thresholds", type=lambda s: [float(v) for v in s.split(",")], default=[0.95])
    parser.add_argument("--top", type=int, default=5)
    parser.add_argument("--edits", type=int, default=100, help="photos edited for the near-duplicate benchmark")
    parser.add_argument("--queries", type=int, default=500, help="test-split photos queried by id")
    args = parser.parse_args()
    base = load_config(args.config)
    queries = test_ids(base, args.queries)
    settings = [("off", with_tier(base, 0, 1.0))] + [(f"top {args.top}, >= {t}", with_tier(base, args.top, t))
                                                     for t in args.thresholds]
    lines = ["| tier | " + " | ".join(EDITS) + " | category P@10 | ms per id query, cold / warm | image query p50 ms |",
             "|---" * (len(EDITS) + 4) + "|"]
    with tempfile.TemporaryDirectory() as tmp:
        files = outside_copies(base, queries[: max(11, args.queries // 10)], Path(tmp))
        for name, config in settings:
            log(f"{name}: near-duplicates, {len(queries)} category queries, {len(files) - 1} image queries")
            p10, cold = category_p10(config, queries)
            _, warm = category_p10(config, queries)
            p50 = query_p50_ms(config, files)
            report = near_duplicate_benchmark(config, images=args.edits, seed=0)
            top1 = [report.accuracy[e]["query"]["top1"] for e in EDITS]
            lines.append(f"| {name} | " + " | ".join(f"{v:.2f}" for v in top1) +
                         f" | {p10:.3f} | {1000 * cold:.1f} / {1000 * warm:.1f} | {p50:.1f} |")
            log(lines[-1])
    print("\n".join(lines))


if __name__ == "__main__":
    main()
