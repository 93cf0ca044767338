"""Candidate generation: which stored images a query re-scores.

    ANN top C·f (C = max(query.candidates, query.candidates_per_k · k); f = the index's ``candidate_factor``:
    1 for HNSW, ``ann.ivfpq.candidate_factor`` for IVF-PQ, whose approximate scores need more) per query vector
    + images within query.hash_candidates_max_bits dHash bits of a query image (at most C)
    + exact cosine top C over images added or changed since build-ann (when the index is stale)

Everything is read from the caller's store snapshot. What is expensive to read (the id → dHash table,
the rows the index does not know) is cached per ``data_version`` in a thread-safe cache shared by all
queries; a query whose snapshot has another version computes its own.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from imagerec.search import similarity
from imagerec.search.fusion import QueryImage
from imagerec.store import FeatureRows, Store
from imagerec.vectors import unit_rows

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CandidateSettings:
    candidates: int
    candidates_per_k: int
    hash_max_bits: int | None  # None: ANN candidates only

    def count(self, top_k: int) -> int:
        """Candidates re-scored for a top-``top_k`` query."""
        return max(self.candidates, self.candidates_per_k * top_k)


@dataclass(frozen=True)
class StaleRows:
    """Images the ANN index does not know, as of one data version."""

    rows: FeatureRows | None  # unit embeddings
    notice: str | None


class VersionCache(Generic[T]):
    """One value per data version: the latest computed one is kept; computing holds a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entry: tuple[int, T] | None = None

    def get(self, version: int, compute: Callable[[], T]) -> T:
        entry = self._entry
        if entry is not None and entry[0] == version:
            return entry[1]
        with self._lock:
            entry = self._entry
            if entry is not None and entry[0] == version:
                return entry[1]
            value = compute()
            self._entry = (version, value)
            return value


class CandidateSource:
    """Shared by every query of one open collection; holds no per-request state."""

    def __init__(self, ann, model_id: str, settings: CandidateSettings):
        self.ann = ann
        self.model_id = model_id
        self.settings = settings
        self._hashes: VersionCache[tuple[np.ndarray, np.ndarray]] = VersionCache()
        self._stale: VersionCache[StaleRows] = VersionCache()

    def collect(self, store: Store, queries: Sequence[QueryImage], vectors: np.ndarray, n: int,
                timings: dict[str, float]) -> tuple[set[int], list[str]]:
        """Candidate ids for unit query ``vectors`` (one row per query) and any notices, from ``store``'s
        snapshot; adds the seconds spent to ``timings`` ("ann_search", "stale_merge")."""
        t0 = time.perf_counter()
        version = store.data_version
        _, ann_ids = self.ann.search(vectors, math.ceil(n * self.ann.candidate_factor))
        ids = set(ann_ids[ann_ids >= 0].tolist())
        ids |= self.hash_candidates(store, version, queries, n + len(queries))  # + the queries themselves
        t1 = time.perf_counter()
        stale = self._stale.get(version, lambda: self._stale_rows(store, version))
        if stale.rows is not None and len(stale.rows):
            sims = stale.rows.embeddings @ vectors.T  # exact inner product, as the index scores
            keep = min(n, len(stale.rows))
            for column in sims.T:
                ids.update(stale.rows.ids[np.argpartition(-column, keep - 1)[:keep]].tolist())
        timings.update({"ann_search": t1 - t0, "stale_merge": time.perf_counter() - t1})
        return ids, [stale.notice] if stale.notice else []

    def hash_candidates(self, store: Store, version: int, queries: Sequence[QueryImage], limit: int) -> set[int]:
        """Ids within ``hash_max_bits`` dHash bits of any query image (the closest ``limit``).

        The ANN finds what the embedding finds; an edited copy of an image (re-encoded, rescaled,
        brightened) can sit far from its original in embedding space yet keep nearly the same dHash, so
        an exact Hamming scan (a few ms at 550k) adds those candidates.
        """
        max_bits = self.settings.hash_max_bits
        if max_bits is None:
            return set()
        ids, hashes = self._hashes.get(version, lambda: store.hashes(self.model_id))
        nearest = np.full(len(ids), 64, dtype=np.int64)
        for q in queries:
            nearest = np.minimum(nearest, similarity.hamming_distance(q.dhash, hashes))
        close = np.flatnonzero(nearest <= max_bits)
        if close.size > limit:
            close = close[np.argsort(nearest[close], kind="stable")[:limit]]
        return set(ids[close].tolist())

    def _stale_rows(self, store: Store, version: int) -> StaleRows:
        meta = self.ann.meta
        if version == meta.data_version:
            return StaleRows(None, None)
        current = store.embedding_ids(self.model_id)
        labels = self.ann.labels()
        extra = np.union1d(np.setdiff1d(current, labels), store.ids_indexed_since(self.model_id, meta.built_at))
        removed = int(np.setdiff1d(labels, current).size)
        rows = store.get_features(extra.tolist(), self.model_id) if extra.size else None
        if rows is not None:
            rows = FeatureRows(rows.ids, rows.paths, unit_rows(rows.embeddings), rows.histograms, rows.dhashes)
        notice = (f"the ANN index is older than the database ({extra.size} images added or changed, {removed} removed "
                  f"since build-ann): they are searched exactly / filtered out; rebuild advised: run 'build-ann'")
        return StaleRows(rows, notice)
