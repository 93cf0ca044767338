"""Leave-one-out retrieval quality of a set of labelled vectors under cosine similarity.

Every item is a query against all the others; an item is relevant when it has the query's label.
Queries with no other item of their label are left out of the averages.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imagerec.vectors import unit_rows

CHUNK = 512  # queries scored at a time: memory is CHUNK x N floats


@dataclass(frozen=True)
class RetrievalScores:
    precision_at_k: float
    mean_average_precision: float
    k: int
    queries: int  # queries that counted (had at least one relevant item)


def retrieval_scores(vectors: np.ndarray, labels: np.ndarray, k: int = 10) -> RetrievalScores:
    """Precision@k and mAP of cosine nearest neighbours, leave-one-out. ``vectors``: (N, D)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    labels = np.asarray(labels)
    if vectors.ndim != 2 or len(vectors) != len(labels):
        raise ValueError(f"expected (N, D) vectors and N labels, got {vectors.shape} and {labels.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n = len(vectors)
    unit = unit_rows(vectors)
    _, codes = np.unique(labels, return_inverse=True)
    relevant_total = np.bincount(codes)[codes] - 1  # other items with the query's label
    precisions, aps = [], []
    for start in range(0, n, CHUNK):
        stop = min(start + CHUNK, n)
        sims = unit[start:stop] @ unit.T
        sims[np.arange(stop - start), np.arange(start, stop)] = -np.inf  # never retrieve yourself
        order = np.argsort(-sims, axis=1, kind="stable")[:, : n - 1]
        hits = codes[order] == codes[start:stop, None]  # (q, N-1) relevance by rank
        counted = relevant_total[start:stop] > 0
        per_query = ranked_metrics(hits[counted], relevant_total[start:stop][counted], (k,))
        precisions.append(per_query[f"p@{k}"])
        aps.append(per_query["map"])
    p = np.concatenate(precisions) if precisions else np.zeros(0)
    ap = np.concatenate(aps) if aps else np.zeros(0)
    return RetrievalScores(float(p.mean()) if len(p) else 0.0, float(ap.mean()) if len(ap) else 0.0, k, len(p))


def precision_at_k(vectors: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    """Mean fraction of the k nearest neighbours (cosine, leave-one-out) that share the query's label."""
    return retrieval_scores(vectors, labels, k).precision_at_k


def mean_average_precision(vectors: np.ndarray, labels: np.ndarray) -> float:
    """Mean over queries of the average precision of the full cosine ranking (leave-one-out)."""
    return retrieval_scores(vectors, labels, 1).mean_average_precision


def ranked_metrics(hits: np.ndarray, relevant_total: np.ndarray, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, np.ndarray]:
    """Per-query P@k, R@k and average precision from relevance in rank order.

    ``hits``: (q, M) bool, ``hits[i, r]`` = the item at rank r + 1 of query i is relevant (the full
    ranking, the query itself left out). ``relevant_total``: (q,) relevant items per query, all > 0.
    Returns ``{"p@k": (q,), "r@k": (q,), ..., "map": (q,)}``; "map" holds each query's AP (mean it).
    P@k divides by k even when fewer than k items are ranked.
    """
    hits = np.asarray(hits, dtype=bool)
    relevant_total = np.asarray(relevant_total, dtype=np.float64)
    if hits.ndim != 2 or len(hits) != len(relevant_total):
        raise ValueError(f"expected (q, M) hits and q totals, got {hits.shape} and {relevant_total.shape}")
    if (relevant_total <= 0).any():
        raise ValueError("every query needs at least one relevant item")
    out: dict[str, np.ndarray] = {}
    for k in ks:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        found = hits[:, :k].sum(axis=1)
        out[f"p@{k}"] = found / k
        out[f"r@{k}"] = found / relevant_total
    ranks = np.arange(1, hits.shape[1] + 1, dtype=np.float64)
    out["map"] = (np.cumsum(hits, axis=1) / ranks * hits).sum(axis=1) / relevant_total
    return out


def rank_by_score(scores: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Column order of each row of ``scores`` (q, N), best first; ties go to the smaller id (as ``query``)."""
    scores = np.asarray(scores)
    by_id = np.argsort(ids, kind="stable")
    order = np.argsort(-scores[:, by_id], axis=1, kind="stable")
    return by_id[order]


def mean_metrics(per_query: dict[str, np.ndarray]) -> dict[str, float]:
    """Average of each per-query metric (0.0 when there are no queries)."""
    return {key: float(values.mean()) if len(values) else 0.0 for key, values in per_query.items()}
