"""Fusion-weight tuning: a simplex grid scored on a validation part of the queries, and writing the winner."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from imagerec.atomic import commit, temp_path
from imagerec.config import Config, load_config
from imagerec.errors import EvaluationError
from imagerec.eval.metrics import mean_metrics
from imagerec.search.fusion import Weights


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


def simplex_grid(step: float) -> np.ndarray:
    """All (embedding, color, dhash) weights that are multiples of ``step`` and sum to 1, shape (G, 3)."""
    if not 0 < step <= 1:
        raise EvaluationError(f"--grid-step must be in (0, 1] (got {step})")
    n = round(1 / step)
    if abs(n * step - 1) > 1e-9:
        raise EvaluationError(f"--grid-step must divide 1 evenly, e.g. 0.05, 0.1, 0.25 (got {step})")
    points = [(i, j, n - i - j) for i in range(n, -1, -1) for j in range(n - i, -1, -1)]
    return np.asarray(points, dtype=np.float64) / n


def pick_weights(grid: np.ndarray, grid_metrics: list[dict[str, np.ndarray]], configured_metrics: dict[str, np.ndarray],
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
    tmp = temp_path(target)
    try:
        tmp.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
        load_config(tmp)  # refuse to leave a config that does not load
        commit(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target
