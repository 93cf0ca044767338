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

import csv
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from imagerec.config import Config, load_config
from imagerec.errors import ImagerecError
from imagerec.search.recommender import QueryImage, Recommender, Scores, Weights, score_candidates
from imagerec.eval.metrics import mean_metrics, rank_by_score, ranked_metrics
from imagerec.tools.viz import sample_ids, top_folder

BLOCK = 64  # queries scored per pass over the store
CHUNK = 10_000  # store rows read at a time
ANN_K = 10
SIGNALS = ("embedding", "color", "dhash", "fused")
METRIC_CHOICES = ("map", "p@1", "p@5", "p@10")


class EvaluationError(ImagerecError):
    """The collection cannot be evaluated as asked (no labels, bad labels file, bad grid...)."""


@dataclass(frozen=True)
class Labels:
    """Group of each labelled image, keyed by its stored path (relative to ``data.image_root``, bytes)."""

    groups: dict[bytes, str]
    source: str  # "folders" or the labels file
    unmatched: int = 0  # labels-file rows naming no image of the collection


@dataclass(frozen=True)
class TuneSettings:
    step: float = 0.05
    metric: str = "map"
    val_fraction: float = 0.5


@dataclass
class TuningResult:
    metric: str
    step: float
    grid_points: int
    val_queries: int
    test_queries: int
    best: Weights
    configured: Weights
    validation: dict[str, dict[str, float]]  # {"best": metrics, "configured": metrics}
    test: dict[str, dict[str, float]]

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "step": self.step, "grid_points": self.grid_points,
                "val_queries": self.val_queries, "test_queries": self.test_queries,
                "best_weights": self.best.as_dict(), "configured_weights": self.configured.as_dict(),
                "validation": self.validation, "test": self.test}


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

    def to_dict(self) -> dict[str, Any]:
        out = {"n_items": self.n_items, "n_queries": self.n_queries, "n_groups": self.n_groups, "labels": self.labels,
               "sample": self.sample, "seed": self.seed, "ks": list(self.ks), "weights": self.weights.as_dict(),
               "color_measure": self.color_measure, "signals": self.signals, f"ann_recall@{ANN_K}": self.ann_recall,
               "ann_queries": self.ann_queries, "ef_search": self.ef_search, "elapsed_s": round(self.elapsed_s, 3),
               "method": "leave-one-out, exhaustive exact scoring of every labelled image; fused = configured weights",
               "notes": list(self.notes)}
        if self.tuning is not None:
            out["tuning"] = self.tuning.to_dict()
        return out


# -- labels ---------------------------------------------------------------------------------------


def folder_labels(paths: Sequence[bytes]) -> Labels:
    """Top-level folder of each path; files directly under the root get no label."""
    groups = {p: top_folder(p) for p in paths if b"/" in p}
    return Labels(groups, "folders")


def read_labels_file(path: str | os.PathLike, image_root: Path, known: set[bytes]) -> Labels:
    """A CSV of ``path,group`` rows (optional header ``path,group``); a row with only a path is labelled
    by its top-level folder, so a split list such as Caltech-101's test.txt works as is. Paths are
    relative to ``data.image_root`` (absolute ones under it are accepted)."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = [row for row in csv.reader(fh) if row and row[0].strip() and not row[0].startswith("#")]
    except FileNotFoundError:
        raise EvaluationError(f"{path}: labels file not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise EvaluationError(f"{path}: cannot read labels file ({exc})") from None
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["path", "group"]:
        rows = rows[1:]
    root = os.path.realpath(image_root)
    groups: dict[bytes, str] = {}
    unmatched = 0
    for line, row in enumerate(rows, 1):
        name = row[0].strip()
        if os.path.isabs(name):
            name = os.path.relpath(os.path.realpath(name), root)
        rel = os.fsencode(name.replace(os.sep, "/"))
        if len(row) > 2 or (len(row) == 2 and not row[1].strip()):
            raise EvaluationError(f"{path}: row {line}: expected 'path,group' or 'path' (got {row!r})")
        group = row[1].strip() if len(row) == 2 else top_folder(rel)
        if rel in known:
            groups[rel] = group
        else:
            unmatched += 1
    return Labels(groups, str(path), unmatched)


# -- weights grid ---------------------------------------------------------------------------------


def simplex_grid(step: float) -> np.ndarray:
    """All (embedding, color, dhash) weights that are multiples of ``step`` and sum to 1, shape (G, 3)."""
    if not 0 < step <= 1:
        raise EvaluationError(f"--grid-step must be in (0, 1] (got {step})")
    n = round(1 / step)
    if abs(n * step - 1) > 1e-9:
        raise EvaluationError(f"--grid-step must divide 1 evenly, e.g. 0.05, 0.1, 0.25 (got {step})")
    points = [(i, j, n - i - j) for i in range(n, -1, -1) for j in range(n - i, -1, -1)]
    return np.asarray(points, dtype=np.float64) / n


# -- leave-one-out --------------------------------------------------------------------------------


@dataclass
class _Universe:
    ids: np.ndarray  # int64, sorted: the labelled images with an embedding
    codes: np.ndarray  # group code per id
    group_names: list[str]
    relevant_total: np.ndarray  # other images with the same label, per id


def evaluate(config: Config, *, labels_file: str | os.PathLike | None = None, sample: int | None = None, seed: int = 0,
             ks: Sequence[int] = (1, 5, 10), weights: Weights | None = None, tune: TuneSettings | None = None,
             progress: Callable[[int, int], None] | None = None) -> EvaluationReport:
    """Leave-one-out retrieval metrics per signal and fused, ANN recall@10, and optionally tuned weights."""
    started = time.perf_counter()
    ks = tuple(sorted({int(k) for k in ks}))
    if not ks or ks[0] < 1:
        raise EvaluationError(f"--k values must be >= 1 (got {list(ks)})")
    if sample is not None and sample < 1:
        raise EvaluationError(f"--sample must be at least 1 (got {sample})")
    if tune is not None and tune.metric not in ("map", *(f"p@{k}" for k in ks)):
        raise EvaluationError(f"--metric {tune.metric}: choose map or p@k for one of --k {list(ks)}")
    grid = simplex_grid(tune.step) if tune is not None else None
    weights = weights or Weights.from_config(config)
    measure = config.query.color_measure
    with Recommender(config) as rec, rec.store.read_snapshot():
        store, model_id = rec.store, rec.model_id
        all_ids, all_paths = _ids_and_paths(rec)
        labels = (read_labels_file(labels_file, config.data.image_root, set(all_paths)) if labels_file is not None
                  else folder_labels(all_paths))
        universe = _universe(all_ids, all_paths, labels, config)
        eligible = universe.ids[universe.relevant_total > 0]
        query_ids = sample_ids(eligible, sample, seed) if sample is not None else eligible
        n_items = len(universe.ids)
        ann_labels = rec.ann.labels()
        per_signal: dict[str, list[dict[str, np.ndarray]]] = {s: [] for s in SIGNALS}
        per_grid: list[list[dict[str, np.ndarray]]] = [[] for _ in range(0 if grid is None else len(grid))]
        ann_hits: list[float] = []
        for start in range(0, len(query_ids), BLOCK):
            block = query_ids[start:start + BLOCK]
            rows = store.get_features(block.tolist(), model_id)
            queries = [QueryImage(f"id {i}", rows.embeddings[r], rows.histograms[r], int(rows.dhashes[r]), int(i),
                                  rows.paths[r]) for r, i in enumerate(rows.ids)]
            matrices, exact_top = _score_block(rec, queries, universe.ids, ann_labels, measure)
            pos = np.searchsorted(universe.ids, rows.ids)
            qcodes, totals = universe.codes[pos], universe.relevant_total[pos]

            def metrics(scores: np.ndarray) -> dict[str, np.ndarray]:
                return _loo_metrics(scores, pos, universe, qcodes, totals, ks)

            signals = Scores(matrices[0], matrices[1], matrices[2], np.zeros(0, np.int64))
            per_signal["embedding"].append(metrics(signals.embedding))
            per_signal["color"].append(metrics(signals.color))
            per_signal["dhash"].append(metrics(signals.dhash))
            per_signal["fused"].append(metrics(signals.fused(weights)))
            for g, point in enumerate(grid if grid is not None else ()):
                per_grid[g].append(metrics(signals.fused(Weights.of(*point))))
            ann_hits.extend(_ann_recall(rec, queries, exact_top))
            if progress:
                progress(min(start + BLOCK, len(query_ids)), len(query_ids))
        ef_search = rec.ann.ef_search
    joined = {s: _concat(parts, ks) for s, parts in per_signal.items()}
    report = EvaluationReport(
        n_items=n_items, n_queries=len(query_ids), n_groups=len(set(universe.codes.tolist())), labels=labels.source,
        sample=sample, seed=seed, ks=ks, weights=weights, color_measure=measure,
        signals={s: mean_metrics(m) for s, m in joined.items()},
        ann_recall=float(np.mean(ann_hits)) if ann_hits else 0.0, ann_queries=len(ann_hits), ef_search=ef_search,
        elapsed_s=0.0,
    )
    if labels.unmatched:
        report.notes.append(f"{labels.unmatched} rows of {labels.source} name no image with an embedding; left out")
    if n_items < len(all_ids):
        report.notes.append(f"{len(all_ids) - n_items} images have no label and were left out")
    if grid is not None:
        report.tuning = _pick_weights(grid, [_concat(parts, ks) for parts in per_grid], joined["fused"], weights,
                                      tune, seed, len(query_ids))
    report.elapsed_s = time.perf_counter() - started
    return report


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
    for chunk in rec.store.iter_features(rec.model_id, chunk_size=CHUNK):
        pos = np.searchsorted(universe_ids, chunk.ids)
        in_u = (pos < n) & (universe_ids[np.minimum(pos, n - 1)] == chunk.ids)
        indexed = np.isin(chunk.ids, ann_labels)
        for b, q in enumerate(queries):
            s = score_candidates([q], chunk, measure)
            matrices[0, b, pos[in_u]] = s.embedding[in_u]
            matrices[1, b, pos[in_u]] = s.color[in_u]
            matrices[2, b, pos[in_u]] = s.dhash[in_u]
            mask = indexed & (chunk.ids != q.image_id)
            top[b] = _merge_top(top[b], s.embedding[mask], chunk.ids[mask])
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
    vectors = np.stack([q.embedding for q in queries]).astype(np.float32)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
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


def _pick_weights(grid: np.ndarray, grid_metrics: list[dict[str, np.ndarray]], configured_metrics: dict[str, np.ndarray],
                  configured: Weights, tune: TuneSettings, seed: int, n_queries: int) -> TuningResult:
    if not 0 < tune.val_fraction < 1:
        raise EvaluationError(f"validation fraction must be in (0, 1) (got {tune.val_fraction})")
    n_val = int(round(n_queries * tune.val_fraction))
    if n_val < 1 or n_val >= n_queries:
        raise EvaluationError(f"--tune-weights needs at least 2 queries to split into validation and test (have {n_queries})")
    is_val = np.zeros(n_queries, dtype=bool)
    is_val[np.random.default_rng(seed).permutation(n_queries)[:n_val]] = True
    val_scores = np.array([m[tune.metric][is_val].mean() for m in grid_metrics])
    best = int(np.argmax(val_scores))  # first maximum: grid order starts at pure embedding

    def part(metrics: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, float]:
        return mean_metrics({k: v[mask] for k, v in metrics.items()})

    return TuningResult(
        metric=tune.metric, step=tune.step, grid_points=len(grid), val_queries=n_val, test_queries=n_queries - n_val,
        best=Weights.of(*grid[best]), configured=configured,
        validation={"best": part(grid_metrics[best], is_val), "configured": part(configured_metrics, is_val)},
        test={"best": part(grid_metrics[best], ~is_val), "configured": part(configured_metrics, ~is_val)},
    )


# -- config writing -------------------------------------------------------------------------------


def write_weights_config(config: Config, weights: Weights, target: str | os.PathLike) -> Path:
    """Set query.w_* in ``target`` (an existing YAML config, or a copy of ``config``'s file when absent).

    Other keys are kept; YAML comments and key order are not. The result is checked with ``load_config``.
    """
    target = Path(target)
    source = target if target.exists() else config.source
    if source is None:
        raise EvaluationError(f"{target}: no such config file and no source config to copy")
    try:
        raw = yaml.safe_load(Path(source).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise EvaluationError(f"{source}: cannot read config ({exc})".replace("\n", " ")) from None
    if not isinstance(raw, dict):
        raise EvaluationError(f"{source}: not a YAML mapping")
    if source != target and Path(source).resolve().parent != target.resolve().parent:
        # relative paths resolve against the config's folder: keep them pointing at the same place
        raw.setdefault("data", {})["image_root"] = str(config.data.image_root)
        raw.setdefault("output", {})["dir"] = str(config.output.dir)
    section = raw.get("query") if isinstance(raw.get("query"), dict) else {}
    section.update({"w_embedding": round(weights.embedding, 6), "w_color": round(weights.color, 6),
                    "w_dhash": round(weights.dhash, 6)})
    raw["query"] = section
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            yaml.safe_dump(raw, fh, sort_keys=False)
        load_config(tmp)  # refuse to leave a config that does not load
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


# -- output ---------------------------------------------------------------------------------------


def format_table(report: EvaluationReport, markdown: bool = False) -> str:
    """The report as a plain-text table (or markdown with ``markdown=True``)."""
    keys = [f"p@{k}" for k in report.ks] + [f"r@{k}" for k in report.ks] + ["map"]
    w = report.weights
    head = (f"leave-one-out over {report.n_items} labelled images in {report.n_groups} groups ({report.labels}), "
            f"{report.n_queries} queries{f' (sample, seed {report.seed})' if report.sample else ''}; "
            f"exhaustive exact scoring; fused weights embedding {w.embedding:.2f}, color {w.color:.2f}, "
            f"dhash {w.dhash:.2f}; colour measure {report.color_measure}")
    rows = [[s, *(f"{report.signals[s][k]:.4f}" for k in keys)] for s in SIGNALS]
    lines = [head, ""] if markdown else [head]
    lines += table_lines(["signal", *keys], rows, markdown) + ([""] if markdown else [])
    lines.append(f"ANN recall@{ANN_K} vs exact cosine ({report.ann_queries} queries, ef_search {report.ef_search}): "
                 f"{report.ann_recall:.4f}")
    if report.tuning is not None:
        t = report.tuning
        m = t.metric
        title = (f"weight tuning: grid step {t.step} ({t.grid_points} points), maximising {m} on {t.val_queries} "
                 f"validation queries; scored on {t.test_queries} test queries")
        lines += ["", title, ""] if markdown else [title]
        tune_rows = []
        for name, weights in (("best", t.best), ("configured", t.configured)):
            tune_rows.append([name, f"{weights.embedding:.2f} / {weights.color:.2f} / {weights.dhash:.2f}",
                              f"{t.validation[name][m]:.4f}", f"{t.test[name][m]:.4f}",
                              *(f"{t.test[name][k]:.4f}" for k in keys if k != m)])
        lines += table_lines(["weights", "embedding / color / dhash", f"val {m}", f"test {m}",
                         *(f"test {k}" for k in keys if k != m)], tune_rows, markdown) + ([""] if markdown else [])
    for note in report.notes:
        lines.append(f"note: {note}")
    lines.append(f"({report.elapsed_s:.1f} s)")
    return "\n".join(lines)


def table_lines(header: list[str], rows: list[list[str]], markdown: bool) -> list[str]:
    """Rows under a header: aligned plain text, or a markdown table."""
    if markdown:
        return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    return ["  ".join(str(c).rjust(wd) if i else str(c).ljust(wd) for i, (c, wd) in enumerate(zip(r, widths)))
            for r in [header, *rows]]

