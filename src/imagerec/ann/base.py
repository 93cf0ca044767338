"""The ANN backend seam: what every index kind (``ann.kind``) provides, and the settings it is built from.

A backend is made from ``AnnSettings`` for one build or one load. Building: optionally ``train`` on a
sample (when ``needs_training``), ``add`` chunks of (int64 ids, unit float32 vectors), then ``write``
its files under a build-unique prefix. Loading: ``load`` the files a manifest names into an
``AnnIndex``. Everything around that (manifest, checksums, atomic replacement, staleness) is shared
and lives in ``manifest``, ``files``, ``build`` and ``load``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from imagerec.config import Config, HnswConfig, WhiteningConfig
from imagerec.errors import ImagerecError

if TYPE_CHECKING:  # pragma: no cover
    from imagerec.ann.manifest import AnnMetadata

REBUILD = "run 'build-ann' again"


class AnnIndexError(ImagerecError):
    """The ANN index is missing, stale for another model, damaged or otherwise unusable."""


@dataclass(frozen=True)
class AnnSettings:
    """What the ANN stage reads from the config, once, at the edge (``from_config``).

    ``kind`` may be "auto" until a build resolves it (``for_collection``) or a load reads it from the manifest
    (``for_kind``); ``params`` are then the chosen backend's own section.
    """

    kind: str = "hnsw"
    params: Mapping[str, Any] = field(default_factory=dict)  # the backend's own section, e.g. M/ef_*
    threads: int | None = None  # build threads; None = CPU count
    build_chunk: int = 10_000
    verify: str = "auto"  # "auto" | "always"
    memory_budget_bytes: int = 4096 << 20
    params_by_kind: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    whitening: WhiteningConfig | None = None  # the re-ranking space build-ann fits (None: none)

    @classmethod
    def from_config(cls, config: "Config") -> "AnnSettings":
        """The settings of ``config.ann`` (the backend's parameters come from ``config.ann.<kind>``)."""
        ann = config.ann
        by_kind = {kind: getattr(ann, kind).model_dump() for kind in ("hnsw", "ivfpq")}
        return cls(kind=ann.kind, params=by_kind.get(ann.kind, {}), threads=ann.threads, build_chunk=ann.build_chunk,
                   verify=ann.verify, memory_budget_bytes=ann.memory_budget << 20, params_by_kind=by_kind,
                   whitening=ann.whitening)

    def for_kind(self, kind: str) -> "AnnSettings":
        """These settings for backend ``kind`` (its parameter section)."""
        return replace(self, kind=kind, params=self.params_by_kind.get(kind, self.params if kind == self.kind else {}))

    def for_collection(self, count: int, dim: int) -> "AnnSettings":
        """Resolve ``kind: auto`` for ``count`` vectors of ``dim``: HNSW while it fits in the memory budget."""
        if self.kind != "auto":
            return self
        return self.for_kind("hnsw" if hnsw_bytes(count, dim, self.params_by_kind.get("hnsw", {})) <= self.memory_budget_bytes
                             else "ivfpq")


def hnsw_bytes(count: int, dim: int, params: Mapping[str, Any]) -> int:
    """Resident size of an HNSW index: float vectors, 2·M int32 links on level 0, the id map (measured: 527 MB at
    100k × 1280-d, M=16, against 526 MB from this)."""
    return count * (4 * dim + 8 * int(params.get("M") or HnswConfig.model_fields["M"].default) + 16)


@runtime_checkable
class AnnIndex(Protocol):
    """A loaded, verified index over image ids. ``search`` never changes shared state."""

    meta: "AnnMetadata"

    @property
    def dim(self) -> int: ...

    @property
    def count(self) -> int: ...

    @property
    def default_params(self) -> dict[str, Any]:
        """The per-call ``search`` parameters used when a call gives none (e.g. ``{"ef_search": 256}``)."""
        ...

    @property
    def candidate_factor(self) -> float:
        """How many times more candidates a query should take for exact re-ranking (1: the scores are exact)."""
        ...

    def check_vectors(self) -> str | None:
        """What is wrong with the stored vectors (not finite, not unit length), or None."""
        ...

    def labels(self) -> np.ndarray:
        """The image ids in the index (int64, read-only)."""
        ...

    def search(self, queries: np.ndarray, k: int, **params: Any) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` by similarity: (scores float32 (n, k'), ids int64 (n, k')), k' = min(k, count)."""
        ...


class AnnBackend(Protocol):
    """One index kind. Made per build or load as ``backend(kind)(settings)``."""

    kind: str  # the ``ann.kind`` value, also the file prefix ``ann_<kind>.``
    library: str  # recorded in the manifest, checked on load
    metric: str
    needs_training: bool

    def __init__(self, settings: AnnSettings) -> None: ...

    def library_version(self) -> str:
        """Version of the library that writes the files."""
        ...

    def build_params(self) -> dict[str, Any]:
        """The parameters recorded in the manifest (the backend's own plus ``threads``)."""
        ...

    def training_size(self, total: int) -> int:
        """How many vectors ``train`` wants for a collection of ``total`` (only if ``needs_training``)."""
        ...

    def train(self, sample: np.ndarray, total: int) -> None:
        """Fit the index on a sample of unit vectors of a ``total``-vector collection before any ``add``."""
        ...

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add one chunk: int64 ids, unit float32 vectors (n, dim)."""
        ...

    def write(self, prefix: Path) -> list[Path]:
        """Write the built index as files named ``prefix.name + suffix``, each atomically; return them."""
        ...

    def load(self, paths: list[Path], meta: "AnnMetadata") -> AnnIndex:
        """Read the (already verified) files of ``meta``; refuse contents that disagree with it."""
        ...


def prepare_queries(queries: np.ndarray, dim: int) -> np.ndarray:
    """C-contiguous float32 (n, dim) copy of ``queries``; wrong shape or NaN/inf is an ``AnnIndexError``."""
    queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    if queries.ndim != 2 or queries.shape[1] != dim:
        raise AnnIndexError(f"query vectors have shape {queries.shape}, index dimension is {dim}")
    if not np.isfinite(queries).all():
        raise AnnIndexError("query vector contains NaN or infinity")
    return queries


def empty_result(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The answer to a search with k' = 0."""
    return np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64)


def finish_result(scores: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Missing neighbours (label -1) get score -inf; scores float32, ids int64."""
    ids = np.asarray(ids, dtype=np.int64)
    return np.where(ids >= 0, scores, -np.inf).astype(np.float32), ids
