"""The ANN stage: an HNSW index over the stored embeddings (``build-ann``) and its safe loading.

Library: FAISS ``IndexHNSWFlat`` wrapped in ``IndexIDMap`` (labels are image ids), inner product on
L2-normalised vectors (= cosine). Chosen by measurement against hnswlib 0.8.0 (see
``bench/bench_ann.py --compare`` and docs/benchmarks.md): same recall and build time, lower latency,
ships wheels, keeps the dimension in the file and checks the query dimension (hnswlib segfaults on a
wrong-dimension query and silently accepts a wrong ``dim`` on load).

Files, both replaced atomically (temp file in the same folder, fsync, ``os.replace``)::

    output.dir/ann_hnsw.bin    the FAISS index
    output.dir/ann_hnsw.json   its metadata (``AnnMetadata``): format, library + version, model id, dim,
                               metric, params, count, max image id, data_version, build time, size,
                               sha256 and a sampled sha256 of the index file

Loading reads the metadata FIRST and refuses (``AnnIndexError``: "run build-ann again") a wrong model
id, dimension, metric or library, and a file whose size or checksum differs, before FAISS parses a
byte. A file that is big (> ``FULL_HASH_MAX_BYTES``) and provably untouched since the build (same
inode, size and mtime) is checked with the sampled hash only, so a 1 GB index loads in ~1 s, not ~6 s;
``ann.verify: always`` forces the full hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from imagerec.config import Config
from imagerec.errors import ImagerecError
from imagerec.tools.status import ann_metadata_path
from imagerec.store import Store

LIBRARY = "faiss"
INDEX_TYPE = "IndexIDMap(IndexHNSWFlat)"
METRIC = "inner_product"
FORMAT = "imagerec.ann"
FORMAT_VERSION = 1
FULL_HASH_MAX_BYTES = 64 << 20
_SAMPLE_BLOCK = 4096
_SAMPLE_BLOCKS = 256
_EDGE_BYTES = 1 << 20
_REBUILD = "run 'build-ann' again"


class AnnIndexError(ImagerecError):
    """The ANN index is missing, stale for another model, damaged or otherwise unusable."""


@dataclass(frozen=True)
class AnnMetadata:
    """What ``ann_hnsw.json`` holds. ``file_*`` describe the index file right after it was written."""

    model_id: str
    dim: int
    count: int
    max_image_id: int
    data_version: int
    params: dict[str, Any]
    built_at: float  # unix time taken BEFORE the database snapshot was read (conservative for staleness)
    built_at_iso: str
    build_seconds: float
    file_size: int
    file_sha256: str
    file_sample_sha256: str
    file_inode: int
    file_mtime_ns: int
    library: str = LIBRARY
    library_version: str = ""
    index_type: str = INDEX_TYPE
    metric: str = METRIC
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "AnnMetadata":
        names = set(cls.__dataclass_fields__)
        missing = [n for n in names if n not in raw]
        if missing:
            raise ValueError(f"missing keys {sorted(missing)}")
        return cls(**{k: raw[k] for k in names})


@dataclass
class BuildSummary:
    path: Path
    metadata: AnnMetadata
    elapsed_s: float
    stage_s: dict[str, float] = field(default_factory=dict)


# -- build ----------------------------------------------------------------------------------------


def build_ann(config: Config, *, progress: Callable[[int, int], None] | None = None) -> BuildSummary:
    """Build ``ann_hnsw.bin`` from the embeddings of the collection's current model.

    Embeddings are read from SQLite ``ann.build_chunk`` rows at a time inside one read snapshot (a
    concurrent ``index`` cannot make the metadata lie). ``progress(done, total)`` is called per chunk.
    The previous index stays in place, usable, until the new one is complete on disk.
    """
    faiss = _faiss()
    started = time.perf_counter()
    built_at = time.time()
    params = {"M": config.ann.hnsw.M, "ef_construction": config.ann.hnsw.ef_construction, "ef_search": config.ann.hnsw.ef_search}
    threads = config.ann.threads or os.cpu_count() or 1
    faiss.omp_set_num_threads(threads)
    stage = {"read": 0.0, "add": 0.0, "write": 0.0}
    with Store(config.output.layout.db, readonly=True) as store, store.read_snapshot():
        model_id = store.model_id
        total = store.count_embeddings_by_model().get(model_id, 0) if model_id else 0
        if not model_id or total == 0:
            raise AnnIndexError(
                f"{config.output.layout.db}: no embeddings to index yet; run 'index' with a model file at "
                f"{config.output.layout.model} first"
            )
        data_version = store.data_version
        index = None
        count = max_id = 0
        t0 = time.perf_counter()
        for ids, vectors in store.iter_embeddings(model_id, chunk_size=config.ann.build_chunk):
            vectors = _unit_rows(vectors)
            stage["read"] += time.perf_counter() - t0
            if index is None:
                dim = vectors.shape[1]
                hnsw = faiss.IndexHNSWFlat(dim, config.ann.hnsw.M, faiss.METRIC_INNER_PRODUCT)
                hnsw.hnsw.efConstruction = config.ann.hnsw.ef_construction
                hnsw.hnsw.efSearch = config.ann.hnsw.ef_search
                index = faiss.IndexIDMap(hnsw)
            elif vectors.shape[1] != dim:
                raise AnnIndexError(f"embeddings of model {model_id} have mixed dimensions ({dim} and {vectors.shape[1]}); re-run 'index'")
            t1 = time.perf_counter()
            index.add_with_ids(vectors, ids)
            stage["add"] += time.perf_counter() - t1
            count += len(ids)
            max_id = int(ids[-1])
            if progress:
                progress(count, total)
            t0 = time.perf_counter()
    t1 = time.perf_counter()
    elapsed = time.perf_counter() - started
    meta_fields = dict(
        model_id=model_id, dim=int(dim), count=count, max_image_id=max_id, data_version=data_version,
        params={**params, "threads": threads}, built_at=built_at,
        built_at_iso=datetime.fromtimestamp(built_at, timezone.utc).isoformat(timespec="seconds"),
        build_seconds=round(elapsed, 3), library_version=faiss.__version__,
    )
    try:
        meta = _write_index(index, config.output.layout.ann_file('ann_hnsw.bin'), ann_metadata_path(config), meta_fields)
    except (OSError, RuntimeError) as exc:  # disk full, permissions; FAISS wraps write errors in RuntimeError
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0][:160]
        raise AnnIndexError(f"{config.output.layout.ann_file('ann_hnsw.bin')}: cannot write the ANN index ({detail}); the previous index is unchanged") from None
    stage["write"] = time.perf_counter() - t1
    return BuildSummary(config.output.layout.ann_file('ann_hnsw.bin'), meta, time.perf_counter() - started, stage)


def _write_index(index, path: Path, meta_path: Path, meta_fields: dict[str, Any]) -> AnnMetadata:
    """Index to a temp file (fsync, hash), metadata to a temp file (fsync), then rename both."""
    faiss = _faiss()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_index = _mktemp(path)
    tmp_meta: str | None = None
    try:
        faiss.write_index(index, tmp_index)
        _fsync_file(tmp_index)
        full, sample = file_hashes(Path(tmp_index))
        st = os.stat(tmp_index)  # rename keeps inode and mtime
        meta = AnnMetadata(file_size=st.st_size, file_sha256=full, file_sample_sha256=sample,
                           file_inode=st.st_ino, file_mtime_ns=st.st_mtime_ns, **meta_fields)
        tmp_meta = _mktemp(meta_path)
        with open(tmp_meta, "w", encoding="utf-8") as fh:
            fh.write(meta.to_json())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_index, path)
        os.replace(tmp_meta, meta_path)
        _fsync_dir(path.parent)
        return meta
    except BaseException:
        for tmp in (tmp_index, tmp_meta):
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
        raise


def _mktemp(path: Path) -> str:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return tmp


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def file_hashes(path: Path, *, sample_only: bool = False) -> tuple[str | None, str]:
    """(sha256 of the whole file or None, sha256 of head + tail + evenly spaced 4 KiB blocks)."""
    size = path.stat().st_size
    full = None if sample_only else hashlib.sha256()
    sample = hashlib.sha256()
    with open(path, "rb") as fh:
        if full is not None:
            while chunk := fh.read(8 << 20):
                full.update(chunk)
        for offset, length in _sample_ranges(size):
            fh.seek(offset)
            sample.update(fh.read(length))
    return (None if full is None else full.hexdigest()), sample.hexdigest()


def _sample_ranges(size: int) -> list[tuple[int, int]]:
    if size <= 2 * _EDGE_BYTES + _SAMPLE_BLOCK * _SAMPLE_BLOCKS:
        return [(0, size)]
    ranges = [(0, _EDGE_BYTES), (size - _EDGE_BYTES, _EDGE_BYTES)]
    step = (size - 2 * _EDGE_BYTES) // _SAMPLE_BLOCKS
    ranges += [(_EDGE_BYTES + i * step, _SAMPLE_BLOCK) for i in range(_SAMPLE_BLOCKS)]
    return ranges


# -- load -----------------------------------------------------------------------------------------


def read_metadata(config: Config) -> AnnMetadata:
    """The metadata of ``config``'s index; ``AnnIndexError`` when absent or unreadable."""
    path, meta_path = config.output.layout.ann_file('ann_hnsw.bin'), ann_metadata_path(config)
    if not path.exists() and not meta_path.exists():
        raise AnnIndexError(f"no ANN index yet at {path}; run 'build-ann' first")
    if not meta_path.exists():
        raise AnnIndexError(f"{meta_path}: ANN metadata is missing; {_REBUILD}")
    if not path.exists():
        raise AnnIndexError(f"{path}: ANN index file is missing; {_REBUILD}")
    try:
        raw = json.loads(meta_path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        return AnnMetadata.from_dict(raw)
    except (OSError, ValueError, TypeError) as exc:
        raise AnnIndexError(f"{meta_path}: unreadable ANN metadata ({exc}); {_REBUILD}") from None


def check_metadata(meta: AnnMetadata, *, model_id: str | None, dim: int | None, where: Path) -> None:
    """Refuse metadata that does not describe an index we can safely query for ``model_id``/``dim``."""
    if meta.format != FORMAT or meta.format_version > FORMAT_VERSION:
        raise AnnIndexError(f"{where}: unknown ANN index format {meta.format} v{meta.format_version}; {_REBUILD}")
    if meta.library != LIBRARY or meta.index_type != INDEX_TYPE:
        raise AnnIndexError(f"{where}: index was built with {meta.library} {meta.index_type}, this imagerec reads {LIBRARY} {INDEX_TYPE}; {_REBUILD}")
    if meta.metric != METRIC:
        raise AnnIndexError(f"{where}: index metric is {meta.metric}, expected {METRIC}; {_REBUILD}")
    if model_id is not None and meta.model_id != model_id:
        raise AnnIndexError(f"{where}: index was built for model {meta.model_id}, the collection now uses {model_id}; {_REBUILD}")
    if dim is not None and meta.dim != dim:
        raise AnnIndexError(f"{where}: index dimension is {meta.dim}, embeddings have {dim}; {_REBUILD}")
    if not isinstance(meta.dim, int) or meta.dim <= 0 or not isinstance(meta.count, int) or meta.count <= 0:
        raise AnnIndexError(f"{where}: ANN metadata has an invalid dim/count; {_REBUILD}")


def verify_file(path: Path, meta: AnnMetadata, mode: str = "auto") -> str:
    """Check size and checksum of the index file against its metadata; returns 'full' or 'sampled'."""
    try:
        st = path.stat()
    except OSError as exc:
        raise AnnIndexError(f"{path}: cannot read ANN index ({exc.strerror}); {_REBUILD}") from None
    if st.st_size != meta.file_size:
        raise AnnIndexError(f"{path}: ANN index is {st.st_size} bytes, expected {meta.file_size} (truncated or replaced); {_REBUILD}")
    untouched = (st.st_ino, st.st_mtime_ns) == (meta.file_inode, meta.file_mtime_ns)
    sampled_only = mode == "auto" and untouched and st.st_size > FULL_HASH_MAX_BYTES
    full, sample = file_hashes(path, sample_only=sampled_only)
    if sample != meta.file_sample_sha256 or (full is not None and full != meta.file_sha256):
        raise AnnIndexError(f"{path}: ANN index checksum mismatch (file corrupted or replaced); {_REBUILD}")
    return "sampled" if sampled_only else "full"


class AnnIndex:
    """A loaded, verified index. ``search`` takes unit float32 vectors of the index dimension."""

    def __init__(self, index, meta: AnnMetadata, path: Path, ef_search: int):
        self._index = index
        self._hnsw = _faiss().downcast_index(index.index)
        self.meta = meta
        self.path = path
        self.ef_search = ef_search
        self._labels: np.ndarray | None = None

    @property
    def dim(self) -> int:
        return self.meta.dim

    @property
    def count(self) -> int:
        return int(self._index.ntotal)

    def labels(self) -> np.ndarray:
        """Image ids in the index (int64), cached."""
        if self._labels is None:
            self._labels = _faiss().vector_to_array(self._index.id_map).astype(np.int64)
        return self._labels

    def search(self, queries: np.ndarray, k: int, ef_search: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` by inner product: (scores (n, k') float32, ids (n, k') int64), k' = min(k, count).

        Missing neighbours (FAISS label -1) are not returned: rows are cut to the shortest full row
        and any remaining -1 entries have score -inf.
        """
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise AnnIndexError(f"query vectors have shape {queries.shape}, index dimension is {self.dim}")
        if not np.isfinite(queries).all():
            raise AnnIndexError("query vector contains NaN or infinity")
        k = min(int(k), self.count)
        if k <= 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        self._hnsw.hnsw.efSearch = max(int(ef_search or self.ef_search), k)
        scores, ids = self._index.search(queries, k)
        scores = np.where(ids >= 0, scores, -np.inf).astype(np.float32)
        return scores, ids.astype(np.int64)


def load_ann(config: Config, *, model_id: str | None, dim: int | None = None) -> AnnIndex:
    """Load ``config``'s index after checking its metadata and file (see module docstring)."""
    path = config.output.layout.ann_file('ann_hnsw.bin')
    meta = read_metadata(config)
    check_metadata(meta, model_id=model_id, dim=dim, where=path)
    verify_file(path, meta, config.ann.verify)
    faiss = _faiss()
    try:
        index = faiss.read_index(str(path))
    except Exception as exc:  # FAISS raises RuntimeError on malformed data
        raise AnnIndexError(f"{path}: cannot read ANN index ({str(exc).splitlines()[0][:120]}); {_REBUILD}") from None
    inner = getattr(index, "index", None)
    if not isinstance(index, faiss.IndexIDMap) or inner is None or not isinstance(faiss.downcast_index(inner), faiss.IndexHNSWFlat):
        raise AnnIndexError(f"{path}: not an {INDEX_TYPE} index; {_REBUILD}")
    if index.d != meta.dim or index.ntotal != meta.count or index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise AnnIndexError(f"{path}: index contents (d={index.d}, n={index.ntotal}) disagree with its metadata; {_REBUILD}")
    faiss.omp_set_num_threads(1)  # one query at a time: threads only add start-up cost
    return AnnIndex(index, meta, path, config.ann.hnsw.ef_search)


# -- helpers --------------------------------------------------------------------------------------


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Float32 copy with every row at unit L2 norm (zero rows stay zero)."""
    out = np.array(vectors, dtype=np.float32, order="C")
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    np.divide(out, norms, out=out, where=norms > 0)
    return out


def _faiss():
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss-cpu is a hard dependency
        raise AnnIndexError(f"faiss is not installed ({exc}); install faiss-cpu") from None
    return faiss
