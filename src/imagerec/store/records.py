"""Row types the store reads and writes, and the path helpers for stored (relative, raw-bytes) paths."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


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
    def from_rows(cls, rows: Sequence[tuple]) -> "FeatureRows":
        """From (id, path, histogram blob, dhash, vector blob) rows."""
        n = len(rows)
        if n == 0:
            empty = np.zeros((0, 0), dtype=np.float32)
            return cls(np.zeros(0, np.int64), [], empty, empty, np.zeros(0, np.int64))
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=n)
        hists = np.frombuffer(b"".join(r[2] for r in rows), dtype="<f4").reshape(n, -1)
        hashes = np.fromiter((r[3] for r in rows), dtype=np.int64, count=n)
        vectors = np.frombuffer(b"".join(r[4] for r in rows), dtype="<f4").reshape(n, -1)
        return cls(ids, [r[1] for r in rows], vectors, hists, hashes)


def display_path(rel_path: bytes) -> str:
    """A printable form of a stored path (undecodable bytes shown as \\x escapes)."""
    return rel_path.decode("utf-8", errors="backslashreplace")


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
