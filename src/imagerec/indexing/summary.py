"""What one ``index`` run did (``IndexSummary``), and the one place its progress events come from."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from imagerec.data.scan import ScanStats
from imagerec.progress import ProgressCallback, report

STAGE = "index"  # the ProgressEvent stage of an index run


@dataclass
class IndexSummary:
    """What one ``index`` run did."""

    indexed: int = 0
    updated: int = 0
    embedded: int = 0
    unchanged: int = 0
    removed: int = 0
    skipped: Counter = field(default_factory=Counter)  # newly recorded, by reason
    skipped_known: int = 0  # recorded earlier and unchanged since
    vanished: int = 0
    scan: ScanStats = field(default_factory=ScanStats)
    model_id: str | None = None
    model_missing: bool = False
    interrupted: bool = False
    elapsed_s: float = 0.0
    stage_s: Counter = field(default_factory=Counter)

    @property
    def processed(self) -> int:
        """Images decoded this run (indexed, updated, embedded or newly skipped)."""
        return self.indexed + self.updated + self.embedded + sum(self.skipped.values())

    @property
    def images_per_second(self) -> float:
        """Decoded images per second of wall time."""
        return self.processed / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: Counters become dicts, the scan statistics a dict; derived rates included."""
        out = {name: getattr(self, name) for name in self.__dataclass_fields__}
        out.update(skipped=dict(self.skipped), stage_s=dict(self.stage_s), scan=asdict(self.scan),
                   processed=self.processed, images_per_second=self.images_per_second)
        return out


class IndexProgress:
    """Counts finished images (decoded, unchanged or skipped-known) and reports each step to ``callback``."""

    def __init__(self, callback: ProgressCallback | None, total: int | None, summary: IndexSummary):
        self.callback = callback
        self.total = total
        self.summary = summary
        self.done = 0

    def advance(self, n: int) -> None:
        """``n`` more images are finished (0: just announce the current state, e.g. at the start)."""
        self.done += n
        report(self.callback, STAGE, self.done, self.total, skipped=sum(self.summary.skipped.values()))
