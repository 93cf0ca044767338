"""Partial whitening of the embedding space, fitted on the collection itself (no labels).

Mean-pooled CNN features share a large common component and a few dominant directions: the raw cosine
of two unrelated photos is high, and those directions decide too much of the ranking. ``Whitening``
centres each embedding on the collection mean, projects it on the collection's top ``dims`` principal
directions and divides each by ``variance ** (power / 2)`` (power 1 = full whitening, 0 = plain PCA),
then unit-normalises. With the default embedder on Caltech-101 (dims 128, power 0.25, chosen on the train
split) that lifts test P@10 from 0.794 to 0.810 (docs/benchmarks.md §10).

``build-ann`` accumulates the statistics while it reads the embeddings (``CovarianceAccumulator``: every
row up to ``MAX_FIT_ROWS``, evenly spaced rows beyond) and stores the fit next to the ANN index; query,
serve and evaluate re-rank in that space. The ANN candidate step stays on the raw cosine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imagerec.ann.files import write_atomically
from imagerec.vectors import unit_rows

#: A fit needs this many embeddings per kept dimension: below it the smallest kept variances are noise and
#: the whitening hurts (measured, 128 dims: a fit on 200 photos loses 0.010 test P@10, on 1,000 gains 0.012).
ROWS_PER_DIM = 8
#: Statistics come from at most about this many rows (evenly spaced): 10M rows would cost minutes of matmul.
MAX_FIT_ROWS = 200_000
SUFFIX = ".npz"


@dataclass(frozen=True)
class Whitening:
    """``unit((x − mean) @ projection)``: the space re-ranking compares embeddings in."""

    mean: np.ndarray  # float32 (d,)
    projection: np.ndarray  # float32 (d, dims): principal directions scaled by variance ** (-power / 2)
    power: float
    rows: int  # embeddings the statistics came from

    @property
    def dim(self) -> int:
        """Dimension of the embeddings it takes."""
        return int(self.mean.shape[0])

    @property
    def dims(self) -> int:
        """Dimension of the whitened vectors."""
        return int(self.projection.shape[1])

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """Unit float32 rows of the whitened ``vectors`` ((n, d) or one (d,) vector)."""
        vectors = np.asarray(vectors, dtype=np.float32)
        return unit_rows((vectors - self.mean) @ self.projection)

    def write(self, target: Path) -> Path:
        """Write to ``target`` atomically; return it."""
        def save(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, mean=self.mean, projection=self.projection, power=np.float64(self.power),
                         rows=np.int64(self.rows))
        return write_atomically(target, save)

    @classmethod
    def read(cls, path: Path) -> "Whitening":
        """The fit stored at ``path``; ``ValueError`` when its arrays are missing, mis-shaped or not finite."""
        with np.load(path, allow_pickle=False) as data:
            mean, projection = data["mean"], data["projection"]
            power, rows = float(data["power"]), int(data["rows"])
        if mean.ndim != 1 or projection.ndim != 2 or projection.shape[0] != mean.shape[0]:
            raise ValueError(f"mean {mean.shape} and projection {projection.shape} do not fit together")
        if not (np.isfinite(mean).all() and np.isfinite(projection).all()):
            raise ValueError("not finite")
        return cls(mean.astype(np.float32), projection.astype(np.float32), power, rows)


class CovarianceAccumulator:
    """Mean and covariance of unit embeddings fed in chunks: every ``stride``-th row, in float64."""

    def __init__(self, dim: int, total: int):
        self.stride = max(1, -(-total // MAX_FIT_ROWS))
        self.count = 0
        self._seen = 0
        self._sum = np.zeros(dim)
        self._outer = np.zeros((dim, dim))

    def add(self, vectors: np.ndarray) -> None:
        """Take the chunk's rows that fall on the stride."""
        rows = np.arange(self._seen, self._seen + len(vectors))
        picked = np.asarray(vectors[rows % self.stride == 0], dtype=np.float32)
        self._seen += len(vectors)
        if len(picked):
            self.count += len(picked)
            self._sum += picked.sum(axis=0, dtype=np.float64)
            self._outer += (picked.T @ picked).astype(np.float64)

    def whitening(self, dims: int, power: float) -> Whitening | None:
        """The fit keeping ``dims`` directions, or None when off (``dims`` 0) or too few rows were seen."""
        dim = self._sum.shape[0]
        if unfit_reason(dims, self.count, dim) is not None:
            return None
        mean = self._sum / self.count
        covariance = self._outer / self.count - np.outer(mean, mean)
        variances, directions = np.linalg.eigh(covariance)  # ascending
        top = np.argsort(variances)[::-1][:dims]
        scale = np.maximum(variances[top], variances[top[0]] * 1e-6) ** (-power / 2)
        return Whitening(mean.astype(np.float32), (directions[:, top] * scale).astype(np.float32), float(power),
                         self.count)


def unfit_reason(dims: int, rows: int, dim: int) -> str | None:
    """Why no whitening keeping ``dims`` directions is fitted from ``rows`` embeddings of ``dim`` (None: it is)."""
    if dims <= 0:
        return "off"
    if rows < ROWS_PER_DIM * dims:
        return f"needs {ROWS_PER_DIM * dims} images"
    if dims >= dim:
        return f"dims {dims} would keep every direction of {dim}"
    return None
