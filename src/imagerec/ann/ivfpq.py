"""The ``ivfpq`` backend: FAISS ``IVF{nlist},PQ{m}x{nbits}`` for collections whose float vectors do not fit in RAM.

Each vector is stored as ``m`` bytes of product-quantisation code plus its 8-byte id in one of ``nlist``
inverted lists; a query scans the ``nprobe`` lists nearest to it. The scores are approximate, so the
index only proposes candidates: ``query`` re-ranks them with the exact embeddings from the store (as it
does for every backend), and final results do not suffer from the PQ error. Trained on a sample read
from the store in chunks (``build.training_sample``), vectors added in chunks, written atomically; with
``mmap: true`` the inverted lists are memory-mapped (``IO_FLAG_MMAP``) instead of read, so search runs
with a small resident set and pages come from the OS cache on demand.

Parameters chosen from N and the dimension when not given, after autofaiss's rules: ``nlist`` ≈ 4·√N
(a power of two, at least 39 training points per list), ``m`` = the largest divisor of the dimension
that is ≤ 64 with sub-vectors of ≥ 4 dimensions (64 bytes + 8 for the id per vector), ``nprobe`` = nlist/16
clamped to 8–256; from 1,024 lists the centroids are found through an HNSW graph instead of exhaustively.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from imagerec.ann.base import REBUILD, AnnIndexError, AnnSettings
from imagerec.ann.faisslib import (check_contents, faiss_module as _faiss, omp_threads as _omp_threads, read_index_file,
                                   search_index, thread_count as _threads, write_index_file)

if TYPE_CHECKING:  # pragma: no cover
    from imagerec.ann.manifest import AnnMetadata

_SUFFIX = ".ivfpq"
MAX_M = 64
TRAIN_POINTS_PER_LIST = 39  # FAISS's minimum for k-means without a warning
TRAIN_MAX = 200_000
KMEANS_ITERATIONS = 10  # FAISS defaults to 25; autofaiss-style 10 takes 40 % of the training time
DEFAULT_CANDIDATE_FACTOR = 2.5  # 200 candidates → 500: re-ranked recall@10 at 5M 0.84 → 0.995 (docs/benchmarks.md §12)
HNSW_QUANTIZER_FROM = 1024  # lists: from here the centroids are searched through an HNSW graph (IVF{n}_HNSW32)


def auto_nlist(n: int) -> int:
    """Inverted lists for ``n`` vectors: the power of two nearest 4·√n, with ≥ 39 training points per list
    within a training sample of at most ``TRAIN_MAX`` (so 4,096 lists from ~1M vectors on: training cost)."""
    target = 4 * math.sqrt(max(n, 1))
    nlist = 2 ** max(0, round(math.log2(target)))
    while nlist > 1 and nlist * TRAIN_POINTS_PER_LIST > min(n, TRAIN_MAX):
        nlist //= 2
    return nlist


def auto_m(dim: int) -> int:
    """PQ sub-quantizers: the largest divisor of ``dim`` ≤ 64 whose sub-vectors have ≥ 4 dimensions (1 if none)."""
    return max([m for m in range(1, min(MAX_M, dim) + 1) if dim % m == 0 and dim // m >= 4] or [1])


def auto_nprobe(nlist: int) -> int:
    return max(1, min(nlist, max(8, min(256, nlist // 16))))


def train_size(nlist: int, n: int, nbits: int = 8) -> int:
    """Training sample: 100 points per list up to ``TRAIN_MAX``, never under 39 per list or per PQ code; at most ``n``."""
    return min(n, max(min(100 * nlist, TRAIN_MAX), TRAIN_POINTS_PER_LIST * max(nlist, 2 ** nbits)))


class IvfPqIndex:
    """A loaded, verified IVF-PQ index; ``nprobe`` is the default number of lists scanned per query."""

    def __init__(self, index, meta: "AnnMetadata", paths: list[Path], nprobe: int, candidate_factor: float = 1.0):
        self._index = index
        self._candidate_factor = float(candidate_factor)
        self.meta = meta
        self.paths = paths
        self._nprobe = int(nprobe)
        self._labels: np.ndarray | None = None  # read from the lists on first use (8 bytes per vector otherwise resident)
        self._lock = threading.Lock()

    @property
    def default_params(self) -> dict[str, Any]:
        return {"nprobe": self._nprobe}

    @property
    def candidate_factor(self) -> float:
        """PQ scores are approximate: queries re-rank this many times more candidates exactly (``candidate_factor``)."""
        return self._candidate_factor

    @property
    def memory_mapped(self) -> bool:
        """Whether the inverted lists are a read-only map of the file (``mmap: true``) rather than read into memory."""
        faiss = _faiss()
        lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(self._index).invlists)
        return isinstance(lists, faiss.OnDiskInvertedLists)

    @property
    def dim(self) -> int:
        return self.meta.dim

    @property
    def count(self) -> int:
        return int(self._index.ntotal)

    def labels(self) -> np.ndarray:
        """Image ids in the index (int64, sorted, read-only); gathered from the inverted lists on first call."""
        with self._lock:
            if self._labels is None:
                faiss = _faiss()
                ivf = faiss.extract_index_ivf(self._index)
                invlists = ivf.invlists
                parts = [faiss.rev_swig_ptr(invlists.get_ids(i), invlists.list_size(i)).copy()
                         for i in range(ivf.nlist) if invlists.list_size(i)]
                labels = np.sort(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, np.int64)
                labels.setflags(write=False)
                self._labels = labels
            return self._labels

    def check_vectors(self) -> str | None:
        """PQ codes have no norm to check: damage shows in the manifest's checksums instead."""
        return None

    def search(self, queries: np.ndarray, k: int, *, nprobe: int | None = None, **_: Any) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` by approximate inner product: (scores (n, k'), ids (n, k')); ``nprobe`` for this call only."""
        return search_index(self._index, queries, k, lambda _: _faiss().SearchParametersIVF(nprobe=int(nprobe or self._nprobe)))


class IvfPqBackend:
    """Builds and loads ``IVF,PQ`` files (``ann.kind: ivfpq``)."""

    kind = "ivfpq"
    library = "faiss"
    metric = "inner_product"
    needs_training = True

    def __init__(self, settings: AnnSettings):
        params = dict(settings.params)
        self.nlist, self.m, self.nprobe = params.get("nlist"), params.get("m"), params.get("nprobe")
        self.nbits = int(params.get("nbits") or 8)
        self.mmap = bool(params.get("mmap", True))  # a load-time choice: the current config decides
        self.candidate_factor = float(params.get("candidate_factor") or DEFAULT_CANDIDATE_FACTOR)
        self.threads = _threads(settings.threads)
        self._index = None

    def library_version(self) -> str:
        return _faiss().__version__

    def build_params(self) -> dict[str, Any]:
        return {"nlist": self.nlist, "m": self.m, "nbits": self.nbits, "nprobe": self.nprobe, "mmap": self.mmap,
                "threads": self.threads}

    def training_size(self, total: int) -> int:
        """How many vectors ``train`` wants for a collection of ``total``."""
        return train_size(self.nlist or auto_nlist(total), total, self.nbits)

    def train(self, sample: np.ndarray, total: int | None = None) -> None:
        """Choose the parameters left open (from ``total`` and the dimension) and train the quantizers."""
        faiss, dim = _faiss(), int(sample.shape[1])
        total = int(total or len(sample))
        self.nlist = int(self.nlist or auto_nlist(total))
        self.m = int(self.m or auto_m(dim))
        self.nprobe = int(self.nprobe or auto_nprobe(self.nlist))
        if dim % self.m:
            raise AnnIndexError(f"ann.ivfpq.m = {self.m} does not divide the embedding dimension {dim}")
        needed = TRAIN_POINTS_PER_LIST * max(self.nlist, 2 ** self.nbits)
        if len(sample) < needed:
            raise AnnIndexError(f"{len(sample)} embeddings are too few to train ann.ivfpq (nlist {self.nlist} and "
                                f"{2 ** self.nbits} codes per sub-quantizer need {needed}): lower ann.ivfpq.nlist, or use "
                                "ann.kind: hnsw (kind: auto does for a collection this small)")
        # "np": no polysemous training (index_factory's default for IVF-PQ, 10x the training time, unused here);
        # an HNSW coarse quantizer once exhaustive assignment to the lists would dominate adding and searching
        coarse = f"IVF{self.nlist}_HNSW32" if self.nlist >= HNSW_QUANTIZER_FROM else f"IVF{self.nlist}"
        index = faiss.index_factory(dim, f"{coarse},PQ{self.m}x{self.nbits}np", faiss.METRIC_INNER_PRODUCT)
        index.cp.niter = KMEANS_ITERATIONS
        with _omp_threads(self.threads):
            index.train(np.ascontiguousarray(sample, dtype=np.float32))
        self._index = index

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if self._index is None:
            raise AnnIndexError("the IVF-PQ index was not trained before adding vectors")
        with _omp_threads(self.threads):
            self._index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64))

    def write(self, prefix: Path) -> list[Path]:
        """``<prefix>.ivfpq``, written atomically."""
        return write_index_file(self._index, prefix, _SUFFIX)

    def load(self, paths: list[Path], meta: "AnnMetadata") -> IvfPqIndex:
        """Read (or memory-map, ``mmap``) the index file and check it is an IVF-PQ index matching ``meta``."""
        faiss = _faiss()
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if self.mmap else 0
        path, index = read_index_file(paths, _SUFFIX, self.kind, flags)
        if not isinstance(index, faiss.IndexIVFPQ):
            raise AnnIndexError(f"{path}: not an IVF-PQ index; {REBUILD}")
        check_contents(index, meta, path)
        nprobe = int(self.nprobe or meta.params.get("nprobe") or auto_nprobe(index.nlist))
        return IvfPqIndex(index, meta, list(paths), nprobe, self.candidate_factor)
