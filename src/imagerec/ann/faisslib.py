"""FAISS, imported on first use, and its process-global OpenMP thread count set only around a build step."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from imagerec.ann.base import REBUILD, AnnIndexError, empty_result, finish_result, prepare_queries
from imagerec.ann.files import write_atomically

if TYPE_CHECKING:  # pragma: no cover
    from imagerec.ann.manifest import AnnMetadata


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


def write_index_file(index, prefix: Path, suffix: str) -> list[Path]:
    """``<prefix><suffix>``, written atomically; the one file of a single-file index."""
    if index is None:
        raise AnnIndexError("nothing was added to the index")
    faiss = faiss_module()
    target = prefix.with_name(prefix.name + suffix)
    return [write_atomically(target, lambda tmp: faiss.write_index(index, str(tmp)))]


def read_index_file(paths: list[Path], suffix: str, kind: str, flags: int = 0):
    """(path, index) of a single-file index; a wrong file list or unreadable data is an ``AnnIndexError``."""
    faiss = faiss_module()
    if len(paths) != 1 or not paths[0].name.endswith(suffix):
        raise AnnIndexError(f"{paths[0].parent if paths else '?'}: an {kind} index is one {suffix} file; {REBUILD}")
    try:
        return paths[0], faiss.read_index(str(paths[0]), flags)
    except Exception as exc:  # FAISS raises RuntimeError on malformed data
        raise AnnIndexError(f"{paths[0]}: cannot read ANN index ({str(exc).splitlines()[0][:120]}); {REBUILD}") from None


def check_contents(index, meta: "AnnMetadata", path: Path) -> None:
    """Refuse an index whose dimension, count or metric disagree with its manifest."""
    faiss = faiss_module()
    if index.d != meta.dim or index.ntotal != meta.count or index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise AnnIndexError(f"{path}: index contents (d={index.d}, n={index.ntotal}, metric={index.metric_type}) "
                            f"disagree with its metadata; {REBUILD}")


def search_index(index, queries, k: int, params_for) -> tuple:
    """Top ``k`` of a FAISS index for checked queries: (scores float32 (n, k'), ids int64 (n, k')), k' = min(k, count);
    ``params_for(k')`` gives this call's search parameters (never the shared index's)."""
    queries = prepare_queries(queries, index.d)
    k = min(int(k), int(index.ntotal))
    if k <= 0:
        return empty_result(len(queries))
    scores, ids = index.search(queries, k, params=params_for(k))
    return finish_result(scores, ids)
