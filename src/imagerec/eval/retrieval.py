"""``evaluate``: leave-one-out retrieval quality per signal and fused, ANN recall, and fusion-weight tuning.

Universe: the images with an embedding of the collection's model AND a label (their top-level folder
under ``data.image_root``, or a ``--labels`` file). Every query (all eligible images, or a seeded
sample) is scored against every other image of the universe, exactly and exhaustively, with
``query.score_candidates`` and ``Scores.fused`` (the measures and fusion ``query`` uses), reading the
store in chunks; ties go to the smaller id, as in ``query``. Memory: ``BLOCK`` queries × N images ×
3 signals at a time. An image is relevant when it has the query's label; queries whose label has no
other image are left out.

The "fused" row is the exhaustive fused ranking (every image a candidate); ``query`` re-ranks ANN
candidates, and ``ann_recall@10`` (ANN top 10 vs exact cosine top 10 over the indexed images) says
how close the candidate step gets.

Tuning: the queries are split (seeded) into a validation and a test part; each point of a weight
grid on the simplex is scored from the same per-signal score matrices (no re-query); the best point
on validation is reported with its test score next to the configured weights'.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from imagerec.config import Config
from imagerec.errors import EvaluationError
from imagerec.eval.labels import Labels, folder_labels, read_labels_file
from imagerec.eval.metrics import mean_metrics, rank_by_score, ranked_metrics
from imagerec.eval.tuning import TuneSettings, TuningResult, pick_weights, simplex_grid
from imagerec.progress import ProgressCallback, report as report_progress
from imagerec.search import similarity
from imagerec.search.fusion import QueryImage, Scores, Weights, score_candidates
from imagerec.search.recommender import Recommender
from imagerec.store.records import sample_ids
from imagerec.vectors import unit_rows

BLOCK = 64  # queries scored per pass over the store
CHUNK = 10_000  # store rows read at a time
ANN_K = 10
SIGNALS = ("embedding", "color", "dhash", "fused")
METRIC_CHOICES = ("map", "p@1", "p@5", "p@10")


@dataclass
class EvaluationReport:
    n_items: int
    n_queries: int
    n_groups: int
    labels: str
    sample: int | None
    seed: int
    ks: tuple[int, ...]
    weights: Weights
    color_measure: str
    signals: dict[str, dict[str, float]]
    ann_recall: float
    ann_queries: int
    ef_search: int
    elapsed_s: float
    tuning: TuningResult | None = None
    notes: list[str] = field(default_factory=list)
    embedding_space: str = "embedding cosine"  # ``EmbeddingSpace.describe`` of the collection

    def to_dict(self) -> dict[str, Any]:
        out = {"n_items": self.n_items, "n_queries": self.n_queries, "n_groups": self.n_groups, "labels": self.labels,
               "sample": self.sample, "seed": self.seed, "ks": list(self.ks), "weights": self.weights.as_dict(),
               "color_measure": self.color_measure, "signals": self.signals, f"ann_recall@{ANN_K}": self.ann_recall,
               "ann_queries": self.ann_queries, "ef_search": self.ef_search, "embedding_space": self.embedding_space,
               "elapsed_s": round(self.elapsed_s, 3),
               "method": "leave-one-out, exhaustive exact scoring of every labelled image; fused = configured weights",
               "notes": list(self.notes)}
        if self.tuning is not None:
            out["tuning"] = self.tuning.to_dict()
        return out


# -- leave-one-out --------------------------------------------------------------------------------


@dataclass
class _Universe:
    ids: np.ndarray  # int64, sorted: the labelled images with an embedding
    codes: np.ndarray  # group code per id
    group_names: list[str]
    relevant_total: np.ndarray  # other images with the same label, per id


def evaluate(config: Config, *, labels_file: str | os.PathLike | None = None, sample: int | None = None, seed: int = 0,
             ks: Sequence[int] = (1, 5, 10), weights: Weights | None = None, tune: TuneSettings | None = None,
             progress: ProgressCallback | None = None) -> EvaluationReport:
    """Leave-one-out retrieval metrics per signal and fused, ANN recall@10, and optionally tuned weights."""
    started = time.perf_counter()
    ks = tuple(sorted({int(k) for k in ks}))
    if not ks or ks[0] < 1:
        raise EvaluationError(f"--k values must be >= 1 (got {list(ks)})")
    if sample is not None and sample < 1:
        raise EvaluationError(f"--sample must be at least 1 (got {sample})")
    if tune is not None and tune.metric not in ("map", *(f"p@{k}" for k in ks)):
        raise EvaluationError(f"--metric {tune.metric}: choose map or p@k for one of --k {list(ks)}")
    measure = config.query.color_measure
    with Recommender(config) as rec, rec.store.read_snapshot():
        weights = weights or rec.weights
        tally = _Tally(ks, weights, simplex_grid(tune.step) if tune is not None else None)
        all_ids, all_paths = _ids_and_paths(rec)
        labels = (read_labels_file(labels_file, config.data.image_root, set(all_paths)) if labels_file is not None
                  else folder_labels(all_paths))
        universe = _universe(all_ids, all_paths, labels, config)
        eligible = universe.ids[universe.relevant_total > 0]
        query_ids = sample_ids(eligible, sample, seed) if sample is not None else eligible
        ann_labels = rec.ann.labels()
        for start in range(0, len(query_ids), BLOCK):
            rows = rec.store.get_features(query_ids[start:start + BLOCK].tolist(), rec.model_id)
            tally.add_block(rec, universe, rows, ann_labels, measure)
            report_progress(progress, "evaluate", min(start + BLOCK, len(query_ids)), len(query_ids))
        ef_search, space = rec.ann.ef_search, rec.space.describe()
    joined = {s: _concat(parts, ks) for s, parts in tally.per_signal.items()}
    report = EvaluationReport(
        n_items=len(universe.ids), n_queries=len(query_ids), n_groups=len(set(universe.codes.tolist())),
        labels=labels.source, sample=sample, seed=seed, ks=ks, weights=weights, color_measure=measure,
        signals={s: mean_metrics(m) for s, m in joined.items()},
        ann_recall=float(np.mean(tally.ann_hits)) if tally.ann_hits else 0.0, ann_queries=len(tally.ann_hits),
        ef_search=ef_search, elapsed_s=0.0, embedding_space=space,
    )
    if labels.unmatched:
        report.notes.append(f"{labels.unmatched} rows of {labels.source} name no image with an embedding; left out")
    if len(universe.ids) < len(all_ids):
        report.notes.append(f"{len(all_ids) - len(universe.ids)} images have no label and were left out")
    if tally.grid is not None:
        report.tuning = pick_weights(tally.grid, [_concat(parts, ks) for parts in tally.per_grid], joined["fused"],
                                     weights, tune, seed, len(query_ids))
    report.elapsed_s = time.perf_counter() - started
    return report


class _Tally:
    """Per-query metrics of each signal, the fused score and every grid point, added block by block."""

    def __init__(self, ks: tuple[int, ...], weights: Weights, grid: np.ndarray | None):
        self.ks, self.weights, self.grid = ks, weights, grid
        self.per_signal: dict[str, list[dict[str, np.ndarray]]] = {s: [] for s in SIGNALS}
        self.per_grid: list[list[dict[str, np.ndarray]]] = [[] for _ in range(0 if grid is None else len(grid))]
        self.ann_hits: list[float] = []

    def add_block(self, rec: Recommender, universe: "_Universe", rows, ann_labels: np.ndarray, measure: str) -> None:
        queries = [QueryImage(f"id {i}", rows.embeddings[r], rows.histograms[r], int(rows.dhashes[r]), int(i),
                              rows.paths[r]) for r, i in enumerate(rows.ids)]
        matrices, exact_top = _score_block(rec, queries, universe.ids, ann_labels, measure)
        pos = np.searchsorted(universe.ids, rows.ids)
        qcodes, totals = universe.codes[pos], universe.relevant_total[pos]

        def metrics(scores: np.ndarray) -> dict[str, np.ndarray]:
            return _loo_metrics(scores, pos, universe, qcodes, totals, self.ks)

        signals = Scores(matrices[0], matrices[1], matrices[2], np.zeros(0, np.int64))
        for name, scores in (("embedding", signals.embedding), ("color", signals.color), ("dhash", signals.dhash),
                             ("fused", signals.fused(self.weights))):
            self.per_signal[name].append(metrics(scores))
        for g, point in enumerate(self.grid if self.grid is not None else ()):
            self.per_grid[g].append(metrics(signals.fused(Weights.of(*point))))
        self.ann_hits.extend(_ann_recall(rec, queries, exact_top))


def _ids_and_paths(rec: Recommender) -> tuple[np.ndarray, list[bytes]]:
    ids, paths = [], []
    for rows in rec.store.iter_features(rec.model_id, chunk_size=CHUNK):
        ids.append(rows.ids)
        paths.extend(rows.paths)
    return (np.concatenate(ids) if ids else np.zeros(0, np.int64)), paths


def _universe(all_ids: np.ndarray, all_paths: list[bytes], labels: Labels, config: Config) -> _Universe:
    keep = np.fromiter((p in labels.groups for p in all_paths), dtype=bool, count=len(all_paths))
    if not keep.any():
        if labels.source == "folders":
            raise EvaluationError(
                f"no labels: the images under {config.data.image_root} are not in class folders; put each group in its "
                "own top-level folder or pass --labels FILE.csv (path,group rows)")
        raise EvaluationError(f"{labels.source}: no row names an image of the collection (paths are relative to {config.data.image_root})")
    ids = all_ids[keep]
    names = [labels.groups[p] for p, k in zip(all_paths, keep) if k]
    group_names, codes = np.unique(np.asarray(names, dtype=object).astype(str), return_inverse=True)
    relevant_total = np.bincount(codes)[codes] - 1
    if not (relevant_total > 0).any():
        raise EvaluationError("every label has a single image: nothing to retrieve (need groups of at least 2 images)")
    return _Universe(ids, codes, list(group_names), relevant_total)


def _score_block(rec: Recommender, queries: list[QueryImage], universe_ids: np.ndarray, ann_labels: np.ndarray,
                 measure: str) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """Signal scores (3, B, N) of each query against the universe, and each query's exact cosine top
    ``ANN_K`` (scores, ids) over the ANN-indexed images, from one pass over the store."""
    n = len(universe_ids)
    matrices = np.zeros((3, len(queries), n))
    top = [(np.full(0, -np.inf), np.zeros(0, np.int64)) for _ in queries]
    in_space = rec.space.queries(queries)
    for chunk in rec.store.iter_features(rec.model_id, chunk_size=CHUNK):
        pos = np.searchsorted(universe_ids, chunk.ids)
        in_u = (pos < n) & (universe_ids[np.minimum(pos, n - 1)] == chunk.ids)
        indexed = np.isin(chunk.ids, ann_labels)
        chunk_in_space = rec.space.rows(chunk)
        for b, (q, q_in_space) in enumerate(zip(queries, in_space)):
            s = score_candidates([q_in_space], chunk_in_space, measure)
            matrices[0, b, pos[in_u]] = s.embedding[in_u]
            matrices[1, b, pos[in_u]] = s.color[in_u]
            matrices[2, b, pos[in_u]] = s.dhash[in_u]
            mask = indexed & (chunk.ids != q.image_id)
            # the exact top the ANN (over the raw embeddings) should find
            raw = s.embedding if rec.space.whitening is None else similarity.cosine_similarity(q.embedding, chunk.embeddings)
            top[b] = _merge_top(top[b], raw[mask], chunk.ids[mask])
    return matrices, top


def _merge_top(current: tuple[np.ndarray, np.ndarray], scores: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s, i = np.concatenate([current[0], scores]), np.concatenate([current[1], ids])
    order = np.lexsort((i, -s))[:ANN_K]
    return s[order], i[order]


def _loo_metrics(scores: np.ndarray, self_pos: np.ndarray, universe: _Universe, qcodes: np.ndarray,
                 totals: np.ndarray, ks: tuple[int, ...]) -> dict[str, np.ndarray]:
    scores = np.array(scores, dtype=np.float64)
    scores[np.arange(len(scores)), self_pos] = -np.inf  # never retrieve yourself
    order = rank_by_score(scores, universe.ids)[:, : len(universe.ids) - 1]
    return ranked_metrics(universe.codes[order] == qcodes[:, None], totals, ks)


def _ann_recall(rec: Recommender, queries: list[QueryImage], exact_top) -> list[float]:
    vectors = unit_rows(np.stack([q.embedding for q in queries]))
    _, found = rec.ann.search(vectors, ANN_K + 1)  # the query itself is usually its own first hit
    recalls = []
    for q, row, (_, truth) in zip(queries, found, exact_top):
        got = [int(i) for i in row if i >= 0 and i != q.image_id][:ANN_K]
        if len(truth):
            recalls.append(len(set(got) & set(truth.tolist())) / len(truth))
    return recalls


def _concat(parts: list[dict[str, np.ndarray]], ks: tuple[int, ...]) -> dict[str, np.ndarray]:
    keys = [f"{m}@{k}" for k in ks for m in ("p", "r")] + ["map"]
    return {key: np.concatenate([p[key] for p in parts]) if parts else np.zeros(0) for key in keys}


