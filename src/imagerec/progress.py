"""One progress event type for every long-running function (index, build-ann, train, evaluate...).

A function that takes ``progress: ProgressCallback | None`` calls it with a ``ProgressEvent`` as work
finishes; the CLI draws bars from the events, a web server can stream them, tests can record them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """``done`` of ``total`` units of ``stage`` finished (``total`` None while unknown); ``counters`` add detail."""

    stage: str
    done: int
    total: int | None
    counters: Mapping[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "done": self.done, "total": self.total, "counters": dict(self.counters)}


ProgressCallback = Callable[[ProgressEvent], None]


def report(progress: ProgressCallback | None, stage: str, done: int, total: int | None, **counters: int) -> None:
    """Send one event to ``progress`` if there is a callback."""
    if progress is not None:
        progress(ProgressEvent(stage, done, total, counters))
