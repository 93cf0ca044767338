"""What training reports: one ``EpochLog`` per epoch (also a line of ``train_log.jsonl``) and the
``TrainSummary`` that ``train_embeddings`` returns."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class EpochLog:
    """One epoch's figures, as written to ``train_log.jsonl``."""

    run: str
    epoch: int  # 1-based
    epochs: int
    step: int  # optimiser steps so far
    train_loss: float
    val_loss: float | None
    val_p_at_10: float | None
    val_map: float | None
    lr: float
    images_per_s: float  # training images (pairs of views) per second, validation excluded
    train_s: float
    val_s: float
    best: bool

    def line(self) -> str:
        """The human-readable one-line form."""
        parts = [f"epoch {self.epoch}/{self.epochs}", f"train_loss {self.train_loss:.4f}"]
        if self.val_loss is not None:
            parts.append(f"val_loss {self.val_loss:.4f}")
        if self.val_p_at_10 is not None:
            parts.append(f"val_P@10 {self.val_p_at_10:.3f}")
        parts += [f"lr {self.lr:.4g}", f"{self.images_per_s:.1f} img/s", f"{self.train_s + self.val_s:.1f} s"]
        return "  ".join(parts) + ("  *best" if self.best else "")

    def append_to(self, log_path: Path) -> None:
        """Append this epoch as one JSON line to ``log_path``."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(asdict(self)) + "\n")


@dataclass
class TrainSummary:
    """What one ``train_embeddings`` call did."""

    model_path: Path
    model_id: str | None  # id of the best model written so far (None if no epoch finished)
    checkpoint_path: Path
    log_path: Path
    start_epoch: int  # epochs already done when this call started
    epochs_done: int  # epochs done when it returned
    epochs: int
    train_images: int
    val_images: int
    skipped: list[tuple[str, str]]  # (path, reason) of images that could not be decoded
    best_metric: str  # "val_p@10", "val_loss" or "last"
    best_value: float | None
    best_epoch: int | None
    cache_built: bool
    wall_s: float
    interrupted: bool
    history: list[EpochLog] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict: paths as strings, tuples as lists, non-finite numbers as None."""
        return _json_safe(asdict(self))


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
