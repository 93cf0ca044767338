"""The query stage: query images → ANN candidates → re-scored with our own measures → ranked results.

Pipeline for each query (one read snapshot of the store)::

    QueryImage(s) ──ANN top C (C = max(query.candidates, query.candidates_per_k · k))──┐
                  ├─images within query.hash_candidates_max_bits dHash bits (≤ C)────┤
                  └─exact cosine over images added/changed since build-ann (if stale)──┴─▶ candidate ids
    candidate ids ─▶ features from SQLite ─▶ for each query image: embedding cosine, colour-histogram
    similarity, dHash similarity (similarity.py) ─▶ averaged over query images ─▶ fused = weighted sum
    (weights ≥ 0, normalised to sum 1) ─▶ query images excluded (unless include_query) ─▶ top k

Colour measure: the Bhattacharyya coefficient Σ√(p·q) by default. On L1-normalised histograms it is
the cosine of the square-rooted histograms, so it lies in [0, 1] like the other scores, and the square
root damps the few dominant bins (sky, white background) that decide histogram intersection; on
Caltech-101 it is the reference colour baseline (P@10 0.189, docs/ceilings.md). Intersection is
available as ``query.color_measure: intersection``.

Query images given by path are features read from the store when the file is the collection's own
(under ``data.image_root``, same size and mtime, same histogram spec and model); otherwise they are
decoded and embedded with the functions and settings ``index`` uses (``loading.load_image``,
``features.color_histogram`` / ``dhash`` / ``model_input``, ``Embedder.embed``).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from imagerec.embed.base import Preprocess
from imagerec.data import loading

from imagerec.search import similarity
from imagerec.ann.hnsw import AnnIndex, load_ann
from imagerec.config import Config
from imagerec.errors import ImageLoadError, ImagerecError
from imagerec.data.features import HistogramSpec, color_histogram, decode_min_side, dhash, hash_to_int64
from imagerec.store import FeatureRows, Store
from imagerec.store.records import display_path


class QueryError(ImagerecError):
    """A query cannot be answered as asked (missing or undecodable query image, unknown id, bad weights...)."""


@dataclass(frozen=True)
class Weights:
    """Fusion weights, normalised to sum to 1."""

    embedding: float
    color: float
    dhash: float

    @classmethod
    def of(cls, embedding: float, color: float, dhash: float) -> "Weights":
        values = (float(embedding), float(color), float(dhash))
        if any(not np.isfinite(v) or v < 0 for v in values):
            raise QueryError(f"weights must be finite and >= 0 (got embedding={values[0]}, color={values[1]}, dhash={values[2]})")
        total = sum(values)
        if total <= 0:
            raise QueryError("weights must not all be 0 (set at least one of --w-embedding, --w-color, --w-dhash)")
        return cls(*(v / total for v in values))

    @classmethod
    def from_config(cls, config: Config, embedding: float | None = None, color: float | None = None, dhash: float | None = None) -> "Weights":
        q = config.query
        return cls.of(q.w_embedding if embedding is None else embedding,
                      q.w_color if color is None else color,
                      q.w_dhash if dhash is None else dhash)

    def as_dict(self) -> dict[str, float]:
        return {"embedding": self.embedding, "color": self.color, "dhash": self.dhash}


@dataclass
class QueryImage:
    """One query image's features. ``image_id`` is set when it is an image of the collection."""

    label: str
    embedding: np.ndarray  # float32 (d,)
    histogram: np.ndarray  # float32 (bins**3,)
    dhash: int  # signed int64 form
    image_id: int | None = None
    rel_path: bytes | None = None  # relative to image_root, for collection images
    file_path: str | None = None  # file the query was read from, if any
    source: str = "stored"  # "stored" (features from SQLite) or "decoded"


@dataclass
class Result:
    rank: int
    id: int
    path: str
    rel_path: bytes
    score: float
    scores: dict[str, float]
    hamming: int  # smallest dHash distance to any query image
    near_duplicate: bool

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "id": self.id, "path": self.path, "score": self.score, "scores": dict(self.scores),
                "hamming": self.hamming, "near_duplicate": self.near_duplicate}


@dataclass
class QueryResponse:
    queries: list[QueryImage]
    results: list[Result]
    weights: Weights
    candidates: int
    notices: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage


@dataclass(frozen=True)
class Scores:
    """Per-candidate scores averaged over the query images (arrays aligned with ``FeatureRows.ids``)."""

    embedding: np.ndarray
    color: np.ndarray
    dhash: np.ndarray
    hamming: np.ndarray  # min over query images

    def fused(self, weights: Weights) -> np.ndarray:
        return weights.embedding * self.embedding + weights.color * self.color + weights.dhash * self.dhash


def score_candidates(queries: Sequence[QueryImage], rows: FeatureRows, color_measure: str = "bhattacharyya") -> Scores:
    """Our measures (similarity.py) of every row against every query image, averaged over query images."""
    n = len(rows)
    emb, col, ph = np.zeros(n), np.zeros(n), np.zeros(n)
    hamming = np.full(n, 64, dtype=np.int64)
    color_fn = similarity.bhattacharyya_coefficient if color_measure == "bhattacharyya" else similarity.histogram_intersection
    if n:
        for q in queries:
            if q.histogram.shape[-1] != rows.histograms.shape[1]:
                raise QueryError(f"query histogram has {q.histogram.shape[-1]} bins, stored ones {rows.histograms.shape[1]} "
                                 "(features.histogram changed?); run 'index' again")
            emb += np.asarray(similarity.cosine_similarity(q.embedding, rows.embeddings), dtype=np.float64)
            col += np.asarray(color_fn(q.histogram, rows.histograms), dtype=np.float64)
            ph += np.asarray(similarity.hash_similarity(q.dhash, rows.dhashes), dtype=np.float64)
            hamming = np.minimum(hamming, similarity.hamming_distance(q.dhash, rows.dhashes))
        emb, col, ph = emb / len(queries), col / len(queries), ph / len(queries)
    return Scores(emb, col, ph, np.asarray(hamming, dtype=np.int64))


class Recommender:
    """An open collection ready to answer queries: store, ANN index and (lazily) the embedding model.

    Use as a context manager. ``embedder`` overrides the model file (tests, benchmarks).
    """

    def __init__(self, config: Config, *, embedder=None, ann: AnnIndex | None = None):
        self.config = config
        self.store = Store(config.output.layout.db, readonly=True)
        try:
            self.model_id = self.store.model_id
            count = self.store.count_embeddings_by_model().get(self.model_id, 0) if self.model_id else 0
            if count == 0:
                raise QueryError(f"the collection at {config.output.layout.db} has no embeddings yet; run 'index' with a model file, then 'build-ann'")
            self.hist_spec = HistogramSpec(config.features.histogram.space, config.features.histogram.bins)
            self.ann = ann if ann is not None else load_ann(config, model_id=self.model_id)
            if self.ann.meta.model_id != self.model_id:
                raise QueryError(f"ANN index is for model {self.ann.meta.model_id}, the collection uses {self.model_id}; run 'build-ann' again")
        except BaseException:
            self.store.close()
            raise
        self._embedder = embedder
        self._stale_cache: tuple[int, np.ndarray, FeatureRows | None, str | None] | None = None
        self._hash_table: tuple[int, np.ndarray, np.ndarray] | None = None  # (data_version, ids, dhashes)
        self.timings: Counter = Counter()

    def __enter__(self) -> "Recommender":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self.store.close()

    # -- query images -----------------------------------------------------------------------------

    def image_by_id(self, image_id: int) -> QueryImage:
        rows = self.store.get_features([image_id], self.model_id)
        if len(rows) == 0:
            if not self.store.get_images([image_id]):
                raise QueryError(f"no image with id {image_id} in the collection")
            raise QueryError(f"image {image_id} has no embedding of model {self.model_id}; run 'index' again")
        return QueryImage(f"id {image_id}", rows.embeddings[0], rows.histograms[0], int(rows.dhashes[0]),
                          image_id, rows.paths[0], None, "stored")

    def image_from_path(self, path: str | os.PathLike) -> QueryImage:
        """A query image from a file: the stored features if it is an unchanged collection image, else decoded."""
        path = Path(path)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise QueryError(f"{path}: query image not found") from None
        except OSError as exc:
            raise QueryError(f"{path}: cannot read query image ({exc.strerror})") from None
        rel = self._collection_rel_path(path)
        if rel is not None:
            state = self.store.lookup([rel]).get(rel)
            if (state is not None and (state.size, state.mtime_ns) == (st.st_size, st.st_mtime_ns)
                    and state.histogram_key == self.hist_spec.key and state.model_id == self.model_id):
                query = self.image_by_id(state.image_id)
                query.label, query.file_path = str(path), str(path)
                return query
        return self.decode_query_image(path, rel)

    def decode_query_image(self, path: Path, rel: bytes | None = None) -> QueryImage:
        """Decode, compute features and embed ``path`` exactly as ``index`` does (``rel`` only labels it)."""
        embedder = self.embedder
        t0 = time.perf_counter()
        settings = loading.LoadSettings.from_config(self.config.index, decode_min_side(embedder.image_size))
        try:
            loaded = loading.load_path(path, settings)
        except ImageLoadError as exc:
            raise QueryError(f"{path}: cannot use this query image ({exc})") from None
        t1 = time.perf_counter()
        histogram = color_histogram(loaded.image, self.hist_spec)
        hash_value = hash_to_int64(dhash(loaded.image))
        pixels = Preprocess(embedder.image_size)(loaded.image)
        t2 = time.perf_counter()
        vector = embedder.embed(np.stack([pixels]))[0]  # a fresh writable batch, as the indexer builds it
        t3 = time.perf_counter()
        self.timings.update({"decode": t1 - t0, "features": t2 - t1, "embed": t3 - t2})
        return QueryImage(str(path), vector, histogram, hash_value, None, rel, str(path), "decoded")

    @property
    def embedder(self):
        if self._embedder is None:
            from imagerec.embed.files import Embedder, load_model, select_device

            path = self.config.output.layout.model
            if not path.exists():
                raise QueryError(f"no embedding model at {path}; a query image from outside the collection needs it")
            # one image at a time: a single torch thread is fastest and does not fight FAISS's OpenMP pool
            self._embedder = Embedder(load_model(path), select_device(self.config.runtime.device), self.config.query.embed_threads)
        if self._embedder.model_id != self.model_id:
            raise QueryError(
                f"the model file {self.config.output.layout.model} (id {self._embedder.model_id}) is not the one the collection "
                f"was indexed with ({self.model_id}); run 'index' and 'build-ann' again"
            )
        return self._embedder

    def _collection_rel_path(self, path: Path) -> bytes | None:
        root = os.path.realpath(self.config.data.image_root)
        real = os.path.realpath(path)
        try:
            rel = os.path.relpath(real, root)
        except ValueError:  # different drives (Windows)
            return None
        if rel == os.curdir or rel.startswith(os.pardir + os.sep) or rel == os.pardir or os.path.isabs(rel):
            return None
        return os.fsencode(rel.replace(os.sep, "/"))

    # -- search -----------------------------------------------------------------------------------

    def query(self, queries: Sequence[QueryImage], *, top_k: int | None = None, weights: Weights | None = None,
              include_query: bool = False) -> QueryResponse:
        if not queries:
            raise QueryError("give at least one query image (--image PATH or --id N)")
        top_k = self.config.query.top_k if top_k is None else int(top_k)
        if top_k < 1:
            raise QueryError(f"--top-k must be at least 1 (got {top_k})")
        weights = weights or Weights.from_config(self.config)
        n_candidates = max(self.config.query.candidates, self.config.query.candidates_per_k * top_k)
        timings: dict[str, float] = {k: v for k, v in self.timings.items()}
        self.timings.clear()
        notices: list[str] = []
        with self.store.read_snapshot():
            t0 = time.perf_counter()
            vectors = np.stack([_unit(q.embedding) for q in queries])
            if vectors.shape[1] != self.ann.dim:
                raise QueryError(f"query embeddings have dimension {vectors.shape[1]}, the ANN index {self.ann.dim}; run 'build-ann' again")
            _, ann_ids = self.ann.search(vectors, n_candidates)
            candidate_ids = set(ann_ids[ann_ids >= 0].tolist())
            candidate_ids |= self.hash_candidates(queries, n_candidates + len(queries))  # + the queries themselves
            t1 = time.perf_counter()
            extra_ids, extra_rows, notice = self._stale_rows()
            if notice:
                notices.append(notice)
            if extra_rows is not None and len(extra_rows):
                sims = extra_rows.embeddings @ vectors.T  # exact inner product, as the index scores
                keep = min(n_candidates, len(extra_rows))
                for column in sims.T:
                    top = np.argpartition(-column, keep - 1)[:keep]
                    candidate_ids.update(extra_rows.ids[top].tolist())
            query_ids = {q.image_id for q in queries if q.image_id is not None}
            for q in queries:  # a collection file that changed since 'index' was decoded afresh: still itself
                if q.image_id is None and q.rel_path is not None:
                    stored_id = self.store.find_by_path(q.rel_path)
                    if stored_id is not None:
                        query_ids.add(stored_id)
            if include_query:
                candidate_ids |= query_ids
            else:
                candidate_ids -= query_ids
            t2 = time.perf_counter()
            rows = self.store.get_features(sorted(candidate_ids), self.model_id)  # removed images are not returned
            t3 = time.perf_counter()
            scores = score_candidates(queries, rows, self.config.query.color_measure)
            fused = scores.fused(weights)
            order = np.lexsort((rows.ids, -fused))[:top_k]
            max_bits = self.config.query.near_duplicate_max_bits
            results = [
                Result(rank=r + 1, id=int(rows.ids[i]), path=display_path(rows.paths[i]), rel_path=rows.paths[i],
                       score=float(fused[i]),
                       scores={"embedding": float(scores.embedding[i]), "color": float(scores.color[i]), "dhash": float(scores.dhash[i])},
                       hamming=int(scores.hamming[i]), near_duplicate=bool(scores.hamming[i] <= max_bits))
                for r, i in enumerate(order)
            ]
            t4 = time.perf_counter()
        timings.update({"ann_search": t1 - t0, "stale_merge": t2 - t1, "fetch": t3 - t2, "rerank": t4 - t3})
        return QueryResponse(list(queries), results, weights, len(rows), notices, timings)

    def hash_candidates(self, queries: Sequence[QueryImage], limit: int) -> set[int]:
        """Ids within ``query.hash_candidates_max_bits`` dHash bits of any query image (the closest ``limit``).

        The ANN finds what the embedding finds; an edited copy of an image (re-encoded, rescaled,
        brightened) can sit far from its original in embedding space yet keep nearly the same dHash, so
        an exact Hamming scan (a few ms at 550k) adds those candidates.
        """
        max_bits = self.config.query.hash_candidates_max_bits
        if max_bits is None:
            return set()
        version = self.store.data_version
        if self._hash_table is None or self._hash_table[0] != version:
            self._hash_table = (version, *self.store.hashes(self.model_id))
        _, ids, hashes = self._hash_table
        nearest = np.full(len(ids), 64, dtype=np.int64)
        for q in queries:
            nearest = np.minimum(nearest, similarity.hamming_distance(q.dhash, hashes))
        close = np.flatnonzero(nearest <= max_bits)
        if close.size > limit:
            close = close[np.argsort(nearest[close], kind="stable")[:limit]]
        return set(ids[close].tolist())

    def _stale_rows(self) -> tuple[np.ndarray, FeatureRows | None, str | None]:
        """Images the index does not know (added, re-embedded or changed since build-ann), cached per data_version."""
        version = self.store.data_version
        meta = self.ann.meta
        if version == meta.data_version:
            return np.zeros(0, np.int64), None, None
        if self._stale_cache is not None and self._stale_cache[0] == version:
            return self._stale_cache[1], self._stale_cache[2], self._stale_cache[3]
        current = self.store.embedding_ids(self.model_id)
        labels = self.ann.labels()
        added = np.setdiff1d(current, labels)
        changed = self.store.ids_indexed_since(self.model_id, meta.built_at)
        extra = np.union1d(added, changed)
        removed = int(np.setdiff1d(labels, current).size)
        rows = self.store.get_features(extra.tolist(), self.model_id) if extra.size else None
        if rows is not None:
            rows = FeatureRows(rows.ids, rows.paths, _unit_rows(rows.embeddings), rows.histograms, rows.dhashes)
        notice = (f"the ANN index is older than the database ({extra.size} images added or changed, {removed} removed "
                  f"since build-ann): they are searched exactly / filtered out; rebuild advised: run 'build-ann'")
        self._stale_cache = (version, extra, rows, notice)
        return extra, rows, notice


def run_query(config: Config, *, images: Sequence[str | os.PathLike] = (), ids: Sequence[int] = (),
              top_k: int | None = None, weights: Weights | None = None, include_query: bool = False,
              embedder=None) -> QueryResponse:
    """One-shot query (the CLI's ``query``): open the collection, resolve query images, search."""
    if not images and not ids:
        raise QueryError("give at least one query image (--image PATH or --id N)")
    weights = weights or Weights.from_config(config)
    for image in images:  # fail fast on a missing file, before loading the index
        if not os.path.exists(image):
            raise QueryError(f"{image}: query image not found")
    with Recommender(config, embedder=embedder) as rec:
        queries = [rec.image_by_id(int(i)) for i in ids] + [rec.image_from_path(p) for p in images]
        return rec.query(queries, top_k=top_k, weights=weights, include_query=include_query)


def _unit(vector: np.ndarray) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors, dtype=np.float32), where=norms > 0).astype(np.float32)
