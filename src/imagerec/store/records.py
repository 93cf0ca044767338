"""Row types the store reads and writes, and the path helpers for stored (relative, raw-bytes) paths."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imagerec.errors import StoreError


@dataclass(frozen=True, slots=True)
class StoredState:
    """What the store knows about a path, for deciding whether to recompute."""

    image_id: int
    size: int
    mtime_ns: int
    histogram_key: str
    model_id: str | None


@dataclass(slots=True)
class ImageRecord:
    """A fully computed image, ready to write. ``embedding`` is None when no model is available."""

    path: bytes
    size: int
    mtime_ns: int
    width: int
    height: int
    format: str
    histogram: np.ndarray
    histogram_key: str
    dhash: int  # signed int64
    embedding: np.ndarray | None = None
    model_id: str | None = None


@dataclass(frozen=True, slots=True)
class SkipRecord:
    path: bytes
    size: int
    mtime_ns: int
    reason: str
    detail: str
    settings: str = ""  # the load settings the skip depended on (a change means: retry)


@dataclass(frozen=True, slots=True)
class WriteResult:
    inserted: int
    updated: int


@dataclass(frozen=True, slots=True)
class StoredImage:
    """One image row with its features, as the query and tools read it."""

    id: int
    path: bytes
    width: int
    height: int
    histogram: np.ndarray
    dhash: int
    embedding: np.ndarray | None


@dataclass(frozen=True, slots=True)
class FeatureRows:
    """Features of many images as arrays (row i belongs to ``ids[i]``); what re-ranking consumes."""

    ids: np.ndarray  # int64 (n,)
    paths: list[bytes]
    embeddings: np.ndarray  # float32 (n, d)
    histograms: np.ndarray  # float32 (n, bins**3)
    dhashes: np.ndarray  # int64 (n,), signed form of the 64-bit dHash

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_rows(cls, rows: Sequence[tuple], db: Path | str = "images.db") -> "FeatureRows":
        """From (id, path, histogram blob, dhash, vector blob) rows; a blob of the wrong size is a ``StoreError``."""
        n = len(rows)
        if n == 0:
            empty = np.zeros((0, 0), dtype=np.float32)
            return cls(np.zeros(0, np.int64), [], empty, empty, np.zeros(0, np.int64))
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=n)
        hists = stack_blobs([r[0] for r in rows], [r[2] for r in rows], "histogram", db)
        hashes = np.fromiter((r[3] for r in rows), dtype=np.int64, count=n)
        vectors = stack_blobs([r[0] for r in rows], [r[4] for r in rows], "embedding", db)
        return cls(ids, [r[1] for r in rows], vectors, hists, hashes)


def check_blob(image_id: int, blob: object, what: str, db: Path | str, expected: int | None = None) -> None:
    """Raise a ``StoreError`` naming ``image_id`` unless ``blob`` is float32 bytes (of ``expected`` bytes if given)."""
    size = len(blob) if isinstance(blob, bytes) else -1
    if size <= 0 or size % 4 or (expected is not None and size != expected):
        want = f"{expected} bytes" if expected is not None else "a non-empty multiple of 4 bytes"
        got = f"{size} bytes" if size >= 0 else f"a {type(blob).__name__}"
        raise StoreError(f"{db}: image id {image_id} has a damaged {what} ({got}, expected {want}); "
                         f"run 'imagerec doctor --repair' to drop such rows (the next 'index' recomputes them)")


def stack_blobs(ids: Sequence[int], blobs: Sequence[bytes], what: str, db: Path | str) -> np.ndarray:
    """(n, d) float32 from equal-sized float32 BLOBs; d is the size most rows have, any other is a ``StoreError``."""
    sizes = [len(b) if isinstance(b, bytes) else -1 for b in blobs]
    expected = max(set(sizes), key=sizes.count)
    for image_id, blob, size in zip(ids, blobs, sizes):
        if size != expected or size <= 0 or size % 4:
            check_blob(image_id, blob, what, db, expected if expected > 0 and expected % 4 == 0 else None)
    return np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), -1)


def display_path(rel_path: bytes) -> str:
    """A printable form of a stored path (undecodable bytes shown as \\x escapes)."""
    return rel_path.decode("utf-8", errors="backslashreplace")


def printable(text: str) -> str:
    """``text`` on one terminal line: control characters (newline, carriage return, escape...) shown escaped."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def absolute_path(image_root: Path, rel_path: bytes) -> bytes:
    return os.path.join(os.fsencode(image_root), rel_path)


def top_folder(rel_path: bytes) -> str:
    """The first folder of a stored path (its class, for collections sorted into folders)."""
    head, sep, _ = rel_path.partition(b"/")
    return head.decode("utf-8", "backslashreplace") if sep else "(top level)"


def sample_ids(all_ids: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Seeded uniform sample of ``size`` ids without replacement, sorted; all ids when ``size`` ≥ their number."""
    if size >= len(all_ids):
        return np.sort(all_ids)
    return np.sort(np.random.default_rng(seed).choice(all_ids, size=size, replace=False))
