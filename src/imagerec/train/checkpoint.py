"""Training checkpoints: everything an exact ``--resume`` needs, written atomically.

Format (``output.dir/checkpoints/checkpoint.pt``, ``torch.save``, read with ``weights_only=True``)::

    {"format": "imagerec.train_checkpoint", "format_version": 1,
     "compat": {settings and cache key that must match to resume},
     "state": {RunState fields}, "backbone": ..., "head": ..., "optimizer": ..., "scheduler": ...,
     "rng": {"python", "numpy", "torch", "cuda", "augment"}, "checksum": sha256 of the rest}

Before anything is restored the checksum is verified and every entry type-checked; a damaged or
foreign checkpoint is a one-line ``TrainError``, never a silent resume. Checkpoints without a
checksum (written before it existed) are accepted after the structural checks.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from imagerec.embed.files import atomic_torch_save, check_checksum, load_tagged_payload
from imagerec.errors import TrainError

CHECKPOINT_FORMAT = "imagerec.train_checkpoint"
CHECKPOINT_VERSION = 1
_HINT = "start without --resume"
# checkpoints from before these keys: always the seed recipe, every stage trained
LEGACY_COMPAT = {"arch": "resnet18", "init": "random", "fixed_stages": 0}
_PARTS = {"compat": dict, "state": dict, "backbone": dict, "head": dict, "optimizer": dict, "scheduler": dict, "rng": dict}
_RNG_KEYS = ("python", "numpy", "torch", "cuda", "augment")
_STATE_TYPES = {"run": (str,), "epoch": (int,), "step_in_epoch": (int,), "global_step": (int,), "loss_sum": (float, int),
                "loss_count": (int,), "train_s": (float, int), "best": (dict,), "best_model_id": (str, type(None)),
                "history": (list,)}


@dataclass
class RunState:
    """Where training stands; everything here goes into the checkpoint."""

    run: str
    epoch: int = 0  # epochs completed (0-based index of the epoch in progress)
    step_in_epoch: int = 0  # steps of that epoch already done
    global_step: int = 0
    loss_sum: float = 0.0  # of the epoch in progress
    loss_count: int = 0
    train_s: float = 0.0
    best: dict[str, Any] = field(default_factory=lambda: {"metric": "last", "value": None, "epoch": None})
    best_model_id: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Resumable:
    """The objects a checkpoint saves and restores."""

    backbone: nn.Module
    head: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    augment_gen: torch.Generator


def save_checkpoint(path: Path, compat: dict[str, Any], state: RunState, parts: Resumable) -> None:
    """Write the checkpoint atomically (a failed write keeps the previous one)."""
    payload = {
        "format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, "compat": compat,
        "state": asdict(state),
        "backbone": parts.backbone.state_dict(), "head": parts.head.state_dict(),
        "optimizer": parts.optimizer.state_dict(), "scheduler": parts.scheduler.state_dict(),
        "rng": rng_state(parts.augment_gen),
    }
    atomic_torch_save(payload, path)


def load_checkpoint(path: Path, compat: dict[str, Any], parts: Resumable) -> RunState:
    """Restore ``parts`` and the RNGs from ``path``; TrainError if it was made with other ``compat`` settings."""
    payload = load_tagged_payload(path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, TrainError, "training checkpoint", _HINT)
    check_checksum(payload, lambda reason: TrainError(f"{path}: training checkpoint {reason}; {_HINT}"))
    state = _checked_state(path, payload)
    saved = {**LEGACY_COMPAT, **payload["compat"]}
    changed = [k for k in compat if saved.get(k) != compat[k]]
    if changed:
        what = ", ".join(f"{k} {saved.get(k)!r} → {compat[k]!r}" for k in changed)
        raise TrainError(f"cannot resume: the checkpoint was made with different settings or images ({what}); "
                         "restore them or start without --resume")
    try:
        parts.backbone.load_state_dict(payload["backbone"])
        parts.head.load_state_dict(payload["head"])
        parts.optimizer.load_state_dict(payload["optimizer"])
        parts.scheduler.load_state_dict(payload["scheduler"])
        set_rng_state(payload["rng"], parts.augment_gen)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise TrainError(f"{path}: damaged training checkpoint ({type(exc).__name__}: {first}); {_HINT}") from None
    return state


def _checked_state(path: Path, payload: dict[str, Any]) -> RunState:
    """The checkpoint's RunState after checking every entry's type (TrainError naming the first bad one)."""
    def bad(what: str) -> TrainError:
        return TrainError(f"{path}: damaged training checkpoint ({what}); {_HINT}")

    for key, kind in _PARTS.items():
        if not isinstance(payload.get(key), kind):
            raise bad(f"'{key}' missing" if key not in payload else f"'{key}' is a {type(payload[key]).__name__}")
    missing = [k for k in _RNG_KEYS if k not in payload["rng"]]
    if missing:
        raise bad(f"rng '{missing[0]}' missing")
    state = payload["state"]
    names = {f.name for f in fields(RunState)}
    if set(state) != names:
        raise bad(f"state keys {sorted(set(state) ^ names)} missing or unknown")
    for key, kinds in _STATE_TYPES.items():
        if not isinstance(state[key], kinds) or (isinstance(state[key], bool) and bool not in kinds):
            raise bad(f"state '{key}' is a {type(state[key]).__name__}")
    return RunState(**state)


def rng_state(augment_gen: torch.Generator) -> dict[str, Any]:
    """Every random number generator training draws from, in weights-only-loadable form."""
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "augment": augment_gen.get_state(),
    }


def set_rng_state(state: dict[str, Any], augment_gen: torch.Generator) -> None:
    """Restore what ``rng_state`` saved."""
    random.setstate(_tuples(state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    augment_gen.set_state(state["augment"])


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value
