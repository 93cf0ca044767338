"""Choosing the whitened re-ranking space (``ann.whitening``) on Caltech-101's train split, scoring it on the test split.

Reads the embeddings and dHashes of a collection indexed with the default embedder (all 9,144 photos, e.g. the
one ``bench_pretrained.py --tune`` leaves in bench/out/pretrained/all_224), fits the whitening with imagerec's
own ``CovarianceAccumulator`` on the whole collection (as ``build-ann`` does: no labels), and reports
leave-one-out P@10 of ``EmbeddingSpace`` scores fused with dHash at the default weight:

  * dims × power, on train-split queries (the choice), and on the test split;
  * raw_share (the plain cosine's share), train and test;
  * fits on random subsets of the collection (how many images a fit needs), test split.

    .venv/bin/python bench/bench_whitening.py --db bench/out/pretrained/all_224/out/images.db
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from imagerec.ann import whitening as whitening_module
from imagerec.ann.whitening import CovarianceAccumulator
from imagerec.search import similarity
from imagerec.search.fusion import DEFAULT_WEIGHTS
from imagerec.search.space import EmbeddingSpace
from imagerec.store import Store
from imagerec.vectors import unit_rows

REPO = Path(__file__).resolve().parents[1]
CALTECH = REPO.parent / "shared" / "data" / "caltech101"
EXCLUDED = "BACKGROUND_Google/"


def load(db: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(relative paths, unit embeddings, dHashes) of every image with an embedding of the collection's model."""
    with Store(db, readonly=True) as store:
        chunks = list(store.iter_features(store.model_id))
    paths = [p.decode() for chunk in chunks for p in chunk.paths]
    return (paths, unit_rows(np.concatenate([c.embeddings for c in chunks])),
            np.concatenate([c.dhashes for c in chunks]))


def fit(vectors: np.ndarray, dims: int, power: float):
    statistics = CovarianceAccumulator(vectors.shape[1], len(vectors))
    for start in range(0, len(vectors), 10_000):
        statistics.add(vectors[start:start + 10_000])
    return statistics.whitening(dims, power)


def precision_at_10(space: EmbeddingSpace, vectors: np.ndarray, hashes: np.ndarray, labels: np.ndarray,
                    w_dhash: float) -> float:
    """Leave-one-out P@10 of (1 − w_dhash) · embedding score + w_dhash · dHash similarity within one split."""
    z = space.vectors(vectors)
    scores = (1 - w_dhash) * (z @ z.T) + w_dhash * np.stack([similarity.hash_similarity(h, hashes) for h in hashes])
    np.fill_diagonal(scores, -np.inf)
    top = np.argpartition(-scores, 10, axis=1)[:, :10]
    return float((labels[top] == labels[:, None]).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=Path, default=REPO / "bench/out/pretrained/all_224/out/images.db")
    parser.add_argument("--train-queries", type=int, default=3000, help="First N train-split images (leave-one-out among them).")
    args = parser.parse_args()
    paths, vectors, hashes = load(args.db)
    row = {p: i for i, p in enumerate(paths)}
    splits = {}
    for name in ("train", "test"):
        rel = [p for p in (CALTECH / f"{name}.txt").read_text().split() if not p.startswith(EXCLUDED)]
        rel = rel[:args.train_queries] if name == "train" else rel
        idx = np.array([row[p] for p in rel])
        splits[name] = (vectors[idx], hashes[idx], np.array([p.split("/")[0] for p in rel]))
    w_dhash = DEFAULT_WEIGHTS["imagenet"][2] / sum(DEFAULT_WEIGHTS["imagenet"])

    def p10(space: EmbeddingSpace, split: str, w: float = w_dhash) -> str:
        return f"{precision_at_10(space, *splits[split], w):.4f}"

    print(f"{len(paths)} embeddings from {args.db}; dHash weight {w_dhash:.2f}; "
          f"{len(splits['train'][0])} train / {len(splits['test'][0])} test queries\n")
    plain = EmbeddingSpace()
    print(f"plain cosine: train {p10(plain, 'train')}, test {p10(plain, 'test')}; embedding alone: "
          f"train {p10(plain, 'train', 0.0)}, test {p10(plain, 'test', 0.0)}\n")
    print("| dims | power | train P@10 (whitened only) | test P@10 (whitened only) |\n|---|---|---|---|")
    for dims in (64, 96, 128, 192, 256):
        for power in (0.25, 0.5):
            space = EmbeddingSpace(fit(vectors, dims, power), raw_share=0.0)
            print(f"| {dims} | {power} | {p10(space, 'train')} | {p10(space, 'test')} |")
    print("\n| raw_share | train P@10 | test P@10 |\n|---|---|---|")
    chosen = fit(vectors, 128, 0.25)
    for share in (0.0, 0.25, 0.5, 0.75, 1.0):
        space = EmbeddingSpace(chosen, raw_share=share)
        print(f"| {share} | {p10(space, 'train')} | {p10(space, 'test')} |")
    print("\n| images the fit saw | test P@10, embedding alone, whitened only (128 dims, power 0.25) |\n|---|---|")
    rng = np.random.default_rng(0)
    whitening_module.ROWS_PER_DIM = 1  # fit below build-ann's minimum: this table is why the minimum exists
    for n in (200, 500, 1000, 2000, 4000, len(vectors)):
        subset = fit(vectors[np.sort(rng.choice(len(vectors), n, replace=False))], 128, 0.25)
        print(f"| {n} | {p10(EmbeddingSpace(subset, raw_share=0.0), 'test', 0.0) if subset else 'no fit (< 8 per dim)'} |")


if __name__ == "__main__":
    main()
