"""One ``index`` run's account (``IndexSummary``, ``format_summary``) and the one source of its progress events."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from imagerec.data.scan import ScanStats
from imagerec.progress import ProgressCallback, report
from imagerec.store.records import printable

STAGE = "index"  # the ProgressEvent stage of an index run


@dataclass
class IndexSummary:
    """What one ``index`` run did."""

    indexed: int = 0
    updated: int = 0
    embedded: int = 0
    unchanged: int = 0
    removed: int = 0
    removal_held: int = 0  # images whose files are gone but were kept: too many at once (see RemovalGuard)
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


def format_summary(s: IndexSummary) -> str:
    """The lines ``imagerec index`` prints: counts, skip reasons, rate, what the scan passed over."""
    skipped = sum(s.skipped.values())
    reasons = ", ".join(f"{n} {r}" for r, n in s.skipped.most_common())
    lines = [
        f"indexed {s.indexed} new, {s.updated} updated, {s.embedded} embeddings added, "
        f"{s.unchanged} unchanged, {s.removed} removed",
        f"skipped {skipped} this run" + (f" ({reasons})" if reasons else "")
        + (f"; {s.skipped_known} skipped before and unchanged ('index --retry-skipped' tries them again)"
           if s.skipped_known else ""),
        f"{s.processed} images in {s.elapsed_s:.1f} s ({s.images_per_second:.1f} images/s)",
    ]
    passed = {"non-image files": s.scan.non_image_files, "files without an extension": s.scan.no_extension,
              "files deleted since the scan": s.vanished, "paths longer than PATH_MAX": s.scan.path_too_long,
              "hidden entries": s.scan.hidden,
              "symlinks": s.scan.symlinks, "special files": s.scan.special_files}
    passed_text = ", ".join(f"{n} {what}" for what, n in passed.items() if n)
    if passed_text:
        lines.append(f"passed over: {passed_text}")
    for folder in s.scan.unreadable_dirs:
        lines.append(f"warning: cannot read folder {printable(folder)}")
    if s.removal_held:
        lines.append(f"warning: kept {s.removal_held} images whose files were not found (an unmounted drive or a wrong "
                     "image root would look the same); if they are really gone, run 'index --prune' to remove them")
    return "\n".join(lines)


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
