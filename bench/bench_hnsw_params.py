"""HNSW parameter sweep: recall@10 against exact search, build time and memory per (M, ef_construction), at one N.

The vectors are the first N rows of a benchmark store made by ``bench_ann.py`` (real Caltech-101 embeddings
plus synthetic rows near them). Each index is built with the real backend (``imagerec.ann.hnsw.HnswBackend``,
chunked adds as ``build-ann`` does, 2 threads); recall is measured against exact inner-product search for
``--queries`` random rows at several ``ef_search`` values.

    .venv/bin/python bench/bench_ann.py --n 550000 --db bench/out/caltech101_default/images.db   # makes the store
    .venv/bin/python bench/bench_hnsw_params.py --store bench/out/ann_550000_noise1/images.db --n 100000 \\
        --grid 16:200 32:200 48:200 32:400

Prints a markdown table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from imagerec.ann.base import AnnSettings
from imagerec.ann.hnsw import HnswBackend
from imagerec.store import Store


def read_vectors(db: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, unit vectors) of the first ``n`` rows with an embedding of the store's model."""
    ids, vectors, have = [], [], 0
    with Store(db, readonly=True) as store:
        for rows in store.iter_features(store.model_id, chunk_size=50_000):
            ids.append(rows.ids)
            vectors.append(rows.embeddings.astype(np.float32))
            have += len(rows.ids)
            if have >= n:
                break
    ids_all, vec_all = np.concatenate(ids)[:n], np.concatenate(vectors)[:n]
    vec_all /= np.linalg.norm(vec_all, axis=1, keepdims=True)
    return ids_all, vec_all


def exact_top10(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Ids of the exact top-10 by inner product for each query, blockwise (bounded memory)."""
    best_s = np.full((len(queries), 10), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), 10), dtype=np.int64)
    for start in range(0, len(vectors), 50_000):
        sims = queries @ vectors[start:start + 50_000].T
        s = np.concatenate([best_s, sims], axis=1)
        i = np.concatenate([best_i, np.broadcast_to(ids[start:start + 50_000], sims.shape)], axis=1)
        top = np.argsort(-s, axis=1)[:, :10]
        best_s, best_i = np.take_along_axis(s, top, 1), np.take_along_axis(i, top, 1)
    return best_i


def rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20


def build_one(vectors, ids, m: int, efc: int, chunk: int, full: bool):
    """(IndexIDMap, build seconds, MiB): one index built with ``HnswBackend`` in chunks, as ``build-ann`` adds."""
    backend = HnswBackend(AnnSettings(params={"M": m, "ef_construction": efc, "fill_level0": full}, threads=2))
    before = rss_mib()
    t0 = time.perf_counter()
    for start in range(0, len(vectors), chunk):
        backend.add(ids[start:start + chunk], vectors[start:start + chunk])
    return backend._index, time.perf_counter() - t0, rss_mib() - before  # searched directly, no file written


def measure(index, queries, truth, efs: list[int], candidates: int) -> dict:
    """recall@10 (k=10) and the share of the true top-10 among the first ``candidates`` results, per ef_search.

    The second is what ``query`` sees: it re-ranks ``query.candidates`` ANN results exactly, with
    ef_search raised to that count.
    """
    import faiss

    row = {}
    for ef in efs:
        found = index.search(queries, 10, params=faiss.SearchParametersHNSW(efSearch=max(ef, 10)))[1]
        row[ef] = float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)]))
    pool = index.search(queries, candidates, params=faiss.SearchParametersHNSW(efSearch=max(max(efs), candidates)))[1]
    row["in_candidates"] = float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(pool, truth)]))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, required=True, help="images.db of a bench_ann.py store.")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--grid", nargs="+", default=["16:200", "32:200"],
                    help="M:ef_construction[:fill] (fill: level-0 lists filled to 2M, ann.hnsw.fill_level0).")
    ap.add_argument("--ef", default="128,256,512,1024", help="ef_search values.")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--chunk", type=int, default=10_000, help="Vectors per add (build-ann's ann.build_chunk).")
    ap.add_argument("--candidates", type=int, default=200, help="query.candidates: ANN results a query re-ranks.")
    ap.add_argument("--index", type=Path, help="Measure this index file (from build-ann on the store) instead of building.")
    args = ap.parse_args()
    ids, vectors = read_vectors(args.store, args.n)
    rng = np.random.default_rng(1)
    queries = vectors[rng.choice(len(vectors), args.queries, replace=False)]
    truth = exact_top10(vectors, ids, queries)
    efs = [int(v) for v in args.ef.split(",")]
    print(f"\n### HNSW parameters, N = {len(ids):,}, dim {vectors.shape[1]}, {args.queries} queries, build 2 threads\n")
    print("| M | ef_construction | build s | index MiB | " + " | ".join(f"recall@10 ef={e}" for e in efs)
          + f" | true top-10 in {args.candidates} candidates |")
    print("|---|---|---|---|" + "---|" * (len(efs) + 1), flush=True)
    if args.index:
        import faiss

        index = faiss.read_index(str(args.index))
        hnsw = faiss.downcast_index(index.index).hnsw
        builds = [(index, float("nan"), float("nan"), f"{hnsw.nb_neighbors(1)} (file)", hnsw.efConstruction)]
    else:
        builds = ((*build_one(vectors, ids, int(m), int(efc), args.chunk, bool(fill)), f"{m}{' fill' if fill else ''}", efc)
                  for m, efc, *fill in (spec.split(":") for spec in args.grid))
    for index, build_s, mem, m, efc in builds:
        r = measure(index, queries, truth, efs, args.candidates)
        print(f"| {m} | {efc} | {build_s:.0f} | {mem:.0f} | " + " | ".join(f"{r[e]:.3f}" for e in efs)
              + f" | {r['in_candidates']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
