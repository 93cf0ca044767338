"""Planning: which scanned files need work, decided from their stored state alone (no I/O, no writes).

The run loop looks a chunk of paths up in the store, marks them seen, and hands the answers to
``plan_chunk``; what comes back is the work (``WorkItem``s) and the counts of what needs none.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from imagerec.data.scan import ScannedFile, ScanStats, count_image_files, scan_images
from imagerec.store import StoredState

PLAN_CHUNK = 256  # paths looked up in SQLite at a time

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ScanSettings:
    """What to scan: the image root and whether symlinks are followed."""

    root: Path
    follow_symlinks: bool = False

    def files(self, stats: ScanStats | None = None) -> Iterator[ScannedFile]:
        """The image files under ``root``, streamed (see ``scan_images``)."""
        return scan_images(self.root, follow_symlinks=self.follow_symlinks, stats=stats)

    def count(self) -> int:
        """How many image files a scan will yield (a separate cheap pass, for progress totals)."""
        return count_image_files(self.root, follow_symlinks=self.follow_symlinks)


@dataclass(frozen=True, slots=True)
class WorkItem:
    """A file to decode: new or changed (``image_id`` None), or unchanged but missing this model's embedding."""

    file: ScannedFile
    image_id: int | None  # set for an unchanged image that only needs its embedding
    embedding_only: bool


@dataclass(frozen=True, slots=True)
class ChunkPlan:
    """The work in one chunk of the scan, and how many files needed none."""

    items: tuple[WorkItem, ...]
    unchanged: int
    skipped_known: int  # recorded as skipped earlier, same (size, mtime) now


def plan_chunk(
    chunk: Sequence[ScannedFile],
    stored: Mapping[bytes, StoredState],
    skipped: Mapping[bytes, tuple],
    hist_key: str,
    model_id: str | None,
    skip_key: str | None = None,
    retry_skipped: bool = False,
) -> ChunkPlan:
    """Classify ``chunk`` against its ``stored`` states and ``skipped`` (size, mtime[, settings]) records.

    Same (size, mtime) and histogram key: unchanged, or embedding-only when ``model_id`` is set and
    differs from the stored one. A skip record with the same (size, mtime) and, when ``skip_key`` is
    given, recorded under those load settings: skipped-known (never with ``retry_skipped``). Anything
    else (new, changed, other histogram or load settings, a file that was fixed) is decoded again.
    """
    items: list[WorkItem] = []
    unchanged = skipped_known = 0
    for scanned in chunk:
        state = stored.get(scanned.rel_path)
        same_file = state is not None and (state.size, state.mtime_ns) == (scanned.size, scanned.mtime_ns)
        if same_file and state.histogram_key == hist_key:
            if model_id is None or state.model_id == model_id:
                unchanged += 1
            else:
                items.append(WorkItem(scanned, state.image_id, embedding_only=True))
        elif state is None and not retry_skipped and _same_skip(skipped.get(scanned.rel_path), scanned, skip_key):
            skipped_known += 1
        else:
            items.append(WorkItem(scanned, None, embedding_only=False))
    return ChunkPlan(tuple(items), unchanged, skipped_known)


def _same_skip(record: tuple | None, scanned: ScannedFile, skip_key: str | None) -> bool:
    if record is None or tuple(record[:2]) != (scanned.size, scanned.mtime_ns):
        return False
    return skip_key is None or (len(record) > 2 and record[2] == skip_key)


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Lists of ``size`` consecutive items (the last one shorter), pulled lazily."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
