"""Leave-one-out retrieval quality of a set of labelled vectors under cosine similarity.

Every item is a query against all the others; an item is relevant when it has the query's label.
Queries with no other item of their label are left out of the averages.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.maximum(norms, 1e-12)
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
        precisions.append(hits[:, :k].sum(axis=1)[counted] / k)
        ranks = np.arange(1, n, dtype=np.float64)
        precision_at_hit = np.cumsum(hits, axis=1) / ranks * hits
        aps.append(precision_at_hit.sum(axis=1)[counted] / relevant_total[start:stop][counted])
    p = np.concatenate(precisions) if precisions else np.zeros(0)
    ap = np.concatenate(aps) if aps else np.zeros(0)
    return RetrievalScores(float(p.mean()) if len(p) else 0.0, float(ap.mean()) if len(ap) else 0.0, k, len(p))


def precision_at_k(vectors: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    """Mean fraction of the k nearest neighbours (cosine, leave-one-out) that share the query's label."""
    return retrieval_scores(vectors, labels, k).precision_at_k


def mean_average_precision(vectors: np.ndarray, labels: np.ndarray) -> float:
    """Mean over queries of the average precision of the full cosine ranking (leave-one-out)."""
    return retrieval_scores(vectors, labels, 1).mean_average_precision
