"""The ``hnsw`` backend: FAISS ``IndexHNSWFlat`` in an ``IndexIDMap`` (labels are image ids).

Inner product on L2-normalised vectors (= cosine). Chosen by measurement against hnswlib 0.8.0 (see
``bench/bench_ann.py --compare`` and docs/benchmarks.md): same recall and build time, lower latency,
ships wheels, keeps the dimension in the file and checks the query dimension (hnswlib segfaults on a
wrong-dimension query and silently accepts a wrong ``dim`` on load).

One file: ``ann_hnsw.<build id>.bin``. ``efSearch`` is passed per call as
``faiss.SearchParametersHNSW`` (``IndexIDMap.search`` forwards it to the inner index), so concurrent
searches with different ``ef_search`` never touch the shared index.

Defaults (docs/benchmarks.md §5, 550k rows of the default 1280-d embedder in tight synthetic groups):
M = 32 with level-0 lists filled to 2·M, and ``ef_search`` chosen from the index size when not given
(``auto_ef_search``): 256 up to ~65k vectors (at 100k every setting measured reached recall@10 1.000),
rising to 1,536 from ~390k (0.993 at 550k, where 1,024 gave 0.988).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from imagerec.ann.base import REBUILD, AnnIndexError, AnnSettings
from imagerec.ann.faisslib import (check_contents, faiss_module as _faiss, omp_threads as _omp_threads, read_index_file,
                                   search_index, thread_count as _threads, write_index_file)
from imagerec.config import HnswConfig

if TYPE_CHECKING:  # pragma: no cover
    from imagerec.ann.manifest import AnnMetadata

_SUFFIX = ".bin"
_DEFAULTS = HnswConfig()  # the one place the defaults live: parameters missing from ``settings.params`` come from it
EF_SEARCH_MIN, EF_SEARCH_MAX, VECTORS_PER_EF = 256, 1536, 256


def auto_ef_search(count: int) -> int:
    """The default beam width for an index of ``count`` vectors: count/256 within 256–1,536."""
    return max(EF_SEARCH_MIN, min(EF_SEARCH_MAX, int(count) // VECTORS_PER_EF))


class HnswIndex:
    """A loaded, verified HNSW index. ``ef_search`` is the default beam width (config ``ann.hnsw.ef_search``, else
    ``auto_ef_search`` of its size)."""

    def __init__(self, index, meta: "AnnMetadata", paths: list[Path], ef_search: int):
        self._index = index
        self.meta = meta
        self.paths = paths
        self._ef_search = int(ef_search)
        labels = _faiss().vector_to_array(index.id_map).astype(np.int64)  # at load: no lazy cache to race on
        labels.setflags(write=False)
        self._labels = labels

    @property
    def path(self) -> Path:
        """The index file."""
        return self.paths[0]

    @property
    def ef_search(self) -> int:
        """Default ``ef_search`` (raised to ``k`` per call)."""
        return self._ef_search

    @property
    def default_params(self) -> dict[str, Any]:
        return {"ef_search": self._ef_search}

    @property
    def candidate_factor(self) -> float:
        return 1.0  # exact inner products of the stored floats

    @property
    def dim(self) -> int:
        return self.meta.dim

    @property
    def count(self) -> int:
        return int(self._index.ntotal)

    def labels(self) -> np.ndarray:
        """Image ids in the index (int64, read-only)."""
        return self._labels

    def stored_vectors(self) -> np.ndarray:
        """The indexed vectors, row i belonging to ``labels()[i]``: a read-only view of the index's memory (no copy)."""
        faiss = _faiss()
        storage = faiss.downcast_index(faiss.downcast_index(self._index.index).storage)
        n, d = storage.ntotal, storage.d
        if n == 0:
            return np.zeros((0, d), dtype=np.float32)
        vectors = faiss.rev_swig_ptr(storage.get_xb(), n * d).reshape(n, d)
        vectors.setflags(write=False)
        return vectors

    def check_vectors(self, chunk: int = 65_536) -> str | None:
        """What is wrong with the stored vectors, or None: each must be finite and unit-length (or zero).

        Built from unit rows, so a NaN overwrite or a flipped exponent/high mantissa bit shows as a
        wrong norm. A pass over the vectors in place (no copy): ~1 s per GB.
        """
        vectors = self.stored_vectors()
        n = len(vectors)
        if n == 0:
            return None
        for start in range(0, n, chunk):
            block = vectors[start:start + chunk]
            norms = np.einsum("ij,ij->i", block, block)
            bad = ~(np.isfinite(norms) & ((np.abs(norms - 1.0) < 1e-3) | (norms == 0.0)))
            if bad.any():
                first = start + int(np.argmax(bad))
                return f"stored vector {first} (image {int(self._labels[first])}) is not a unit vector"
        return None

    def search(self, queries: np.ndarray, k: int, *, ef_search: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` by inner product: (scores (n, k') float32, ids (n, k') int64), k' = min(k, count).

        Missing neighbours (label -1) have score -inf. ``ef_search`` applies to this call only.
        """
        return search_index(self._index, queries, k,
                            lambda k: _faiss().SearchParametersHNSW(efSearch=max(int(ef_search or self._ef_search), k)))


class HnswBackend:
    """Builds and loads ``IndexIDMap(IndexHNSWFlat)`` files (``ann.kind: hnsw``)."""

    kind = "hnsw"
    library = "faiss"
    metric = "inner_product"
    needs_training = False

    def __init__(self, settings: AnnSettings):
        params = dict(settings.params)
        self.M = int(params.get("M", _DEFAULTS.M))
        self.ef_construction = int(params.get("ef_construction", _DEFAULTS.ef_construction))
        self.ef_search: int | None = params.get("ef_search", _DEFAULTS.ef_search)
        self.fill_level0 = bool(params.get("fill_level0", _DEFAULTS.fill_level0))
        self.threads = _threads(settings.threads)
        self._index = None

    def library_version(self) -> str:
        return _faiss().__version__

    def build_params(self) -> dict[str, Any]:
        return {"M": self.M, "ef_construction": self.ef_construction, "ef_search": self.ef_search,
                "fill_level0": self.fill_level0, "threads": self.threads}

    def training_size(self, total: int) -> int:
        return 0

    def train(self, sample: np.ndarray, total: int) -> None:
        """HNSW needs no training."""

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add one chunk (the first one fixes the dimension)."""
        faiss = _faiss()
        if self._index is None:
            hnsw = faiss.IndexHNSWFlat(int(vectors.shape[1]), self.M, faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = self.ef_construction
            # The neighbour heuristic keeps few links inside a tight group (burst shots, edited copies): filling the
            # level-0 list up to 2M with the links it pruned keeps every member reachable (docs/benchmarks.md §5).
            hnsw.keep_max_size_level0 = self.fill_level0
            self._index = faiss.IndexIDMap(hnsw)
        with _omp_threads(self.threads):
            self._index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64))

    def write(self, prefix: Path) -> list[Path]:
        """``<prefix>.bin``, written atomically."""
        return write_index_file(self._index, prefix, _SUFFIX)

    def load(self, paths: list[Path], meta: "AnnMetadata") -> HnswIndex:
        """Read the index file and check it is an ``IndexIDMap(IndexHNSWFlat)`` matching ``meta``."""
        faiss = _faiss()
        path, index = read_index_file(paths, _SUFFIX, self.kind)
        inner = getattr(index, "index", None)
        if not isinstance(index, faiss.IndexIDMap) or inner is None or not isinstance(faiss.downcast_index(inner), faiss.IndexHNSWFlat):
            raise AnnIndexError(f"{path}: not an IndexIDMap(IndexHNSWFlat) index; {REBUILD}")
        check_contents(index, meta, path)
        return HnswIndex(index, meta, list(paths), self.ef_search or auto_ef_search(index.ntotal))
