"""The ANN backend seam: what every index kind (``ann.kind``) provides, and the settings it is built from.

A backend is made from ``AnnSettings`` for one build or one load. Building: optionally ``train`` on a
sample (when ``needs_training``), ``add`` chunks of (int64 ids, unit float32 vectors), then ``write``
its files under a build-unique prefix. Loading: ``load`` the files a manifest names into an
``AnnIndex``. Everything around that (manifest, checksums, atomic replacement, staleness) is shared
and lives in ``manifest``, ``files``, ``build`` and ``load``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from imagerec.errors import ImagerecError

if TYPE_CHECKING:  # pragma: no cover
    from imagerec.ann.manifest import AnnMetadata
    from imagerec.config import Config

REBUILD = "run 'build-ann' again"


class AnnIndexError(ImagerecError):
    """The ANN index is missing, stale for another model, damaged or otherwise unusable."""


@dataclass(frozen=True)
class AnnSettings:
    """What the ANN stage reads from the config, once, at the edge (``from_config``)."""

    kind: str = "hnsw"
    params: Mapping[str, Any] = field(default_factory=dict)  # the backend's own section, e.g. M/ef_*
    threads: int | None = None  # build threads; None = CPU count
    build_chunk: int = 10_000
    verify: str = "auto"  # "auto" | "always"

    @classmethod
    def from_config(cls, config: "Config") -> "AnnSettings":
        """The settings of ``config.ann`` (the backend's parameters come from ``config.ann.<kind>``)."""
        ann = config.ann
        section = getattr(ann, ann.kind, None)
        params = section.model_dump() if section is not None else {}
        return cls(kind=ann.kind, params=params, threads=ann.threads, build_chunk=ann.build_chunk, verify=ann.verify)


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

    def train(self, sample: np.ndarray) -> None:
        """Fit the index on a sample of unit vectors before any ``add`` (only if ``needs_training``)."""
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
