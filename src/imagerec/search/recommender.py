"""The query stage: query images → candidates → re-scored with our own measures → ranked results.

    query images (ids, files) ─▶ candidates (candidates.py: ANN + dHash neighbours + rows newer than the index)
      ─▶ features from SQLite ─▶ embeddings into the collection's space (space.py: blended with the whitened
      cosine when build-ann fitted a whitening) ─▶ fusion.score_candidates (embedding, colour, dHash; averaged
      over the query images) ─▶ weighted sum ─▶ query images excluded (unless include_query)
      ─▶ same-photo tier (verify.py: the query's own photo, cropped or re-encoded, moved first) ─▶ top k

A ``Recommender`` is request-safe: any number of threads may call ``search``/``query`` at once. Each
call reads one snapshot of the store through its thread's own read-only connection, per-request
facts (timings, notices, data version) travel in the ``QueryResponse``, the ANN index is searched
with per-call parameters, and the caches it shares are keyed by data version and locked.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from imagerec.closing import Closing
from imagerec.config import Config
from imagerec.data.features import HistogramSpec
from imagerec.data.thumbnails import Thumbnails
from imagerec.search.candidates import CandidateSettings, CandidateSource
from imagerec.errors import QueryError
from imagerec.embed.choice import ModelChoice
from imagerec.search.fusion import QueryImage, Scores, Weights, score_candidates
from imagerec.search.query_images import DecodeRules, decode_query_image, image_by_id, stored_query_image
from imagerec.search.space import EmbeddingSpace
from imagerec.search.verify import SamePhotoSettings, SamePhotoTier
from imagerec.store import FeatureRows, Store, StoreReaders
from imagerec.store.records import absolute_path, display_path
from imagerec.vectors import unit_rows

__all__ = ["QueryError", "QueryImage", "QueryResponse", "Recommender", "Result", "Scores", "SearchSettings", "Weights",
           "run_query", "score_candidates"]


@dataclass(frozen=True)
class SearchSettings:
    """Everything the query stage reads from the config, taken once when a collection is opened."""

    db: Path
    model: ModelChoice
    image_root: Path
    device: str
    embed_threads: int
    top_k: int
    weight_overrides: tuple[float | None, float | None, float | None]  # query.w_* as configured (None: default)
    candidates: CandidateSettings
    color_measure: str
    near_duplicate_max_bits: int
    decode: DecodeRules
    same_photo: SamePhotoSettings
    thumbs_dir: Path  # the collection's thumbnail cache (shared with serve)
    thumbnail_sizes: tuple[int, ...]

    @classmethod
    def from_config(cls, config: Config) -> "SearchSettings":
        q, h = config.query, config.features.histogram
        return cls(
            db=config.output.layout.db, model=ModelChoice.from_config(config), image_root=Path(config.data.image_root),
            device=config.runtime.device, embed_threads=q.embed_threads, top_k=q.top_k,
            weight_overrides=(q.w_embedding, q.w_color, q.w_dhash),
            candidates=CandidateSettings(q.candidates, q.candidates_per_k, q.hash_candidates_max_bits),
            color_measure=q.color_measure, near_duplicate_max_bits=q.near_duplicate_max_bits,
            decode=DecodeRules(config.index.formats, config.index.max_image_pixels, HistogramSpec(h.space, h.bins)),
            same_photo=SamePhotoSettings(q.same_photo_top, q.same_photo_min_correlation),
            thumbs_dir=config.output.layout.thumbs_dir, thumbnail_sizes=config.web.thumbnail_sizes,
        )

    def thumbnails(self) -> Thumbnails:
        """The collection's thumbnail cache, decoding with the index's allow-list and pixel limit."""
        return Thumbnails(self.thumbs_dir, self.decode.formats, self.decode.max_pixels, self.thumbnail_sizes)

    def weights_for(self, model_init: str | None) -> Weights:
        """Fusion weights for a collection whose model started from ``model_init`` ("imagenet"/"random"; None:
        not recorded, so ``model.init``): the defaults for that kind of model with ``query.w_*`` in their place."""
        return Weights.default(model_init or self.model.init, self.weight_overrides)


@dataclass(frozen=True)
class Result:
    """One similar image. ``path`` is absolute; ``relpath`` is relative to ``data.image_root``."""

    rank: int
    id: int
    path: str
    relpath: str
    rel_path: bytes  # raw stored form of relpath
    score: float
    scores: Mapping[str, float]
    hamming: int  # smallest dHash distance to any query image
    near_duplicate: bool  # within query.near_duplicate_max_bits, or the same photo by thumbnail
    match: float | None = None  # thumbnail correlation with the query, for the candidates the same-photo tier checked

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "id": self.id, "path": self.path, "relpath": self.relpath, "score": self.score,
                "scores": dict(self.scores), "hamming": self.hamming, "near_duplicate": self.near_duplicate,
                "match": self.match}


@dataclass
class QueryResponse:
    queries: list[QueryImage]
    results: list[Result]
    weights: Weights
    candidates: int
    data_version: int  # the store snapshot the results come from
    notices: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage

    def to_dict(self) -> dict[str, Any]:
        return {"queries": [q.label for q in self.queries], "results": [r.to_dict() for r in self.results],
                "weights": self.weights.as_dict(), "candidates": self.candidates, "data_version": self.data_version,
                "notices": list(self.notices), "timings": dict(self.timings)}


class Recommender(Closing):
    """An open collection ready to answer queries from any number of threads. Use as a context manager.

    ``embedder`` and ``ann`` override the model file and the ANN index (tests, benchmarks). ``weights``
    are the collection's default fusion weights (``SearchSettings.weights_for`` its recorded model);
    ``space`` is where embeddings are compared (the whitening stored with the ANN index, if any).
    """

    def __init__(self, config: Config, *, embedder=None, ann=None):
        self.settings = SearchSettings.from_config(config)
        self._readers = StoreReaders(self.settings.db) if self.settings.db.exists() else None
        if self._readers is None:
            raise QueryError(f"{self.settings.db}: no database yet; run 'index' first")
        try:
            self.model_id = self._open_model_id()
            self.weights = self.settings.weights_for(self.store.model_init)
            from imagerec.ann import load_ann, read_whitening

            if ann is None:
                ann = load_ann(config, model_id=self.model_id)
            if ann.meta.model_id != self.model_id:
                raise QueryError(f"ANN index is for model {ann.meta.model_id}, the collection uses {self.model_id}; run 'build-ann' again")
            self.space = EmbeddingSpace(read_whitening(config.output.layout, ann.meta), config.ann.whitening.raw_share)
        except BaseException:
            self._readers.close()
            raise
        self.ann = ann
        _one_query_per_thread()
        self._candidates = CandidateSource(ann, self.model_id, self.settings.candidates)
        s = self.settings
        self._same_photo = SamePhotoTier(s.same_photo, s.image_root, s.thumbnails())
        self._embedder = embedder
        self._embedder_lock = threading.Lock()

    def _open_model_id(self) -> str:
        store = self.store
        model_id = store.model_id
        if not model_id or store.count_embeddings_by_model().get(model_id, 0) == 0:
            raise QueryError(f"the collection at {self.settings.db} has no embeddings yet; run 'index' with a model file, then 'build-ann'")
        return model_id

    def close(self) -> None:
        self._readers.close()

    @property
    def store(self) -> Store:
        """This thread's read-only connection to the store."""
        return self._readers.get()

    @property
    def embedder(self):
        """The collection's embedding model, loaded on first use (by one thread; the others wait)."""
        with self._embedder_lock:
            if self._embedder is None:
                from imagerec.embed import load_chosen_embedder
                from imagerec.embed.device import set_torch_threads

                choice = self.settings.model
                if not choice.available:
                    raise QueryError(f"no embedding model at {choice.model_path}; a query image from outside the collection needs it")
                set_torch_threads(self.settings.embed_threads)  # see _one_query_per_thread
                self._embedder = load_chosen_embedder(choice, device=self.settings.device, threads=self.settings.embed_threads)
        if self._embedder.model_id != self.model_id:
            raise QueryError(
                f"{self.settings.model.describe()} (id {self._embedder.model_id}) is not the model the collection "
                f"was indexed with ({self.model_id}); run 'index' and 'build-ann' again"
            )
        return self._embedder

    # -- query images -----------------------------------------------------------------------------

    def image_by_id(self, image_id: int) -> QueryImage:
        return image_by_id(self.store, self.model_id, image_id)

    def image_from_path(self, path: str | os.PathLike, timings: dict[str, float] | None = None) -> QueryImage:
        """A query image from a file: the stored features if it is an unchanged collection image, else decoded."""
        path = Path(path)
        stored, rel = stored_query_image(self.store, self.model_id, self.settings.decode.histogram.key,
                                         self.settings.image_root, path)
        if stored is not None:
            return stored
        query, spent = decode_query_image(path, self.settings.decode, self.embedder, rel)
        if timings is not None:
            timings.update(spent)
        return query

    def hash_candidates(self, queries: Sequence[QueryImage], limit: int) -> set[int]:
        """Ids within ``query.hash_candidates_max_bits`` dHash bits of any query image (the closest ``limit``)."""
        store = self.store
        with store.read_snapshot():
            return self._candidates.hash_candidates(store, store.data_version, queries, limit)

    # -- search -----------------------------------------------------------------------------------

    def search(self, *, ids: Sequence[int] = (), images: Sequence[str | os.PathLike] = (), top_k: int | None = None,
               weights: Weights | None = None, include_query: bool = False) -> QueryResponse:
        """Resolve the query images and answer them, all from one snapshot of the store."""
        if not ids and not images:
            raise QueryError("give at least one query image (--image PATH or --id N)")
        with self.store.read_snapshot():
            timings: dict[str, float] = {}
            queries = [self.image_by_id(int(i)) for i in ids] + [self.image_from_path(p, timings) for p in images]
            return self.query(queries, top_k=top_k, weights=weights, include_query=include_query, timings=timings)

    def query(self, queries: Sequence[QueryImage], *, top_k: int | None = None, weights: Weights | None = None,
              include_query: bool = False, timings: dict[str, float] | None = None) -> QueryResponse:
        """The ``top_k`` images most similar to ``queries`` (fused score averaged over them)."""
        if not queries:
            raise QueryError("give at least one query image (--image PATH or --id N)")
        top_k = self.settings.top_k if top_k is None else int(top_k)
        if top_k < 1:
            raise QueryError(f"--top-k must be at least 1 (got {top_k})")
        weights = weights or self.weights
        n_candidates = self.settings.candidates.count(top_k)
        timings = dict(timings or {})
        store = self.store
        with store.read_snapshot():
            version, notices = store.data_version, self._model_notices(store)
            vectors = unit_rows(np.stack([q.embedding for q in queries]))
            if vectors.shape[1] != self.ann.dim:
                raise QueryError(f"query embeddings have dimension {vectors.shape[1]}, the ANN index {self.ann.dim}; run 'build-ann' again")
            candidate_ids, stale_notices = self._candidates.collect(store, queries, vectors, n_candidates, timings)
            query_ids = self._query_ids(store, queries)
            candidate_ids = candidate_ids | query_ids if include_query else candidate_ids - query_ids
            t1 = time.perf_counter()
            rows = store.get_features(sorted(candidate_ids), self.model_id)  # removed images are not returned
            t2 = time.perf_counter()
            scores = self.score(queries, rows)
            fused = scores.fused(weights)
            t3 = time.perf_counter()
            order, matches = self._same_photo.reorder(queries, np.lexsort((rows.ids, -fused)), rows.ids, rows.paths)
            t4 = time.perf_counter()
            results = [self._result(r + 1, rows, i, scores, fused, matches.get(i)) for r, i in enumerate(order[:top_k])]
        timings.update({"fetch": t2 - t1, "rerank": t3 - t2, "same_photo": t4 - t3})
        return QueryResponse(list(queries), results, weights, len(rows), version, notices + stale_notices, timings)

    def score(self, queries: Sequence[QueryImage], rows: FeatureRows) -> Scores:
        """Our measures of ``rows`` against ``queries``, embeddings compared in the collection's space."""
        return score_candidates(self.space.queries(queries), self.space.rows(rows), self.settings.color_measure)

    def _model_notices(self, store: Store) -> list[str]:
        current = store.model_id
        if current != self.model_id:
            return [f"the collection was re-indexed with model {current} since it was opened; reopen it to search the new embeddings"]
        return []

    @staticmethod
    def _query_ids(store: Store, queries: Sequence[QueryImage]) -> set[int]:
        ids = {q.image_id for q in queries if q.image_id is not None}
        for q in queries:  # a collection file that changed since 'index' was decoded afresh: still itself
            if q.image_id is None and q.rel_path is not None:
                stored_id = store.find_by_path(q.rel_path)
                if stored_id is not None:
                    ids.add(stored_id)
        return ids

    def _result(self, rank: int, rows, i: int, scores: Scores, fused: np.ndarray, match: float | None) -> Result:
        rel = rows.paths[i]
        same_photo = match is not None and match >= self.settings.same_photo.min_correlation
        return Result(
            rank=rank, id=int(rows.ids[i]), path=display_path(absolute_path(self.settings.image_root, rel)),
            relpath=display_path(rel), rel_path=rel, score=float(fused[i]),
            scores={"embedding": float(scores.embedding[i]), "color": float(scores.color[i]), "dhash": float(scores.dhash[i])},
            hamming=int(scores.hamming[i]),
            near_duplicate=same_photo or bool(scores.hamming[i] <= self.settings.near_duplicate_max_bits), match=match,
        )


def _one_query_per_thread() -> None:
    """Thread pools for a process that answers queries: FAISS now, torch when the embedder loads.

    Each query embeds one image and searches a few vectors: intra-op pools only add start-up cost, and
    with many request threads they would oversubscribe the cores. Process-wide by nature (OpenMP,
    torch), so it is set once when a collection opens for search, never per request.
    """
    import faiss

    faiss.omp_set_num_threads(1)


def run_query(config: Config, *, images: Sequence[str | os.PathLike] = (), ids: Sequence[int] = (),
              top_k: int | None = None, weights: Weights | Mapping[str, float | None] | None = None,
              include_query: bool = False, embedder=None) -> QueryResponse:
    """One-shot query (the CLI's ``query``): open the collection, resolve query images, search.

    ``weights`` may be a mapping of some signals' weights: the others keep the collection's defaults.
    """
    if not images and not ids:
        raise QueryError("give at least one query image (--image PATH or --id N)")
    for image in images:  # fail fast on a missing file, before loading the index
        if not os.path.exists(image):
            raise QueryError(f"{image}: query image not found")
    with Recommender(config, embedder=embedder) as rec:
        if isinstance(weights, Mapping):
            weights = Weights.merged(rec.weights, weights)
        return rec.search(ids=ids, images=images, top_k=top_k, weights=weights, include_query=include_query)
