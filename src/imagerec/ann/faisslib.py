"""FAISS, imported on first use, and its process-global OpenMP thread count set only around a build step."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from imagerec.ann.base import AnnIndexError


def thread_count(threads: int | None) -> int:
    """Build threads: the configured number, else the CPU count."""
    return int(threads or os.cpu_count() or 1)


@contextmanager
def omp_threads(n: int) -> Iterator[None]:
    """FAISS's OpenMP thread count for a build step, restored afterwards (it is process-global)."""
    faiss = faiss_module()
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def faiss_module():
    """The ``faiss`` module; ``AnnIndexError`` naming the package when it is missing."""
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss-cpu is a hard dependency
        raise AnnIndexError(f"faiss is not installed ({exc}); install faiss-cpu") from None
    return faiss
