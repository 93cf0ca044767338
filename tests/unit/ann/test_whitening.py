"""The whitening fit: against numpy's eigendecomposition, its bounds, its file, and what it is for."""

from __future__ import annotations

import numpy as np
import pytest

from imagerec.ann import whitening as whitening_module
from imagerec.ann.whitening import CovarianceAccumulator, Whitening
from imagerec.vectors import unit_rows


def _anisotropic(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Unit rows with distinct variances per direction (so principal directions are well defined)."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.normal(size=(d, d)))
    scales = np.linspace(3.0, 0.1, d)
    return unit_rows(rng.normal(size=(n, d)) * scales @ basis.T + 0.5)


def _fit(vectors: np.ndarray, dims: int, power: float, chunk: int = 300) -> Whitening | None:
    statistics = CovarianceAccumulator(vectors.shape[1], len(vectors))
    for start in range(0, len(vectors), chunk):
        statistics.add(vectors[start:start + chunk])
    return statistics.whitening(dims, power)


def test_fit_matches_numpy_eigendecomposition():
    x = _anisotropic(3000, 24)
    full = _fit(x, 8, 1.0)
    centred = (x - full.mean) @ full.projection
    assert np.allclose(full.mean, x.mean(axis=0), atol=1e-6)
    assert np.allclose(centred.T @ centred / len(x), np.eye(8), atol=1e-3)  # power 1: unit variance per direction
    plain = _fit(x, 8, 0.0)
    variances, directions = np.linalg.eigh(np.cov(x, rowvar=False, bias=True))
    top = directions[:, np.argsort(variances)[::-1][:8]]
    assert np.allclose(np.abs(plain.projection.T @ top), np.eye(8), atol=1e-4)  # the top 8 principal directions
    half = _fit(x, 8, 0.5)
    spread = np.var((x - half.mean) @ half.projection, axis=0)
    assert np.all(np.diff(spread) < 0) and spread[0] / spread[-1] < np.var(x @ top, axis=0)[0] / np.var(x @ top, axis=0)[-1]
    assert half.dim == 24 and half.dims == 8 and half.rows == 3000 and half.power == 0.5


def test_off_or_too_few_rows_means_no_whitening():
    x = _anisotropic(100, 32)
    assert _fit(x, 0, 0.25) is None  # off
    assert _fit(x, 16, 0.25) is None  # 100 rows < 8 per direction
    assert _fit(x, 32, 0.25) is None  # keeping every direction is no projection
    assert _fit(x, 12, 0.25).dims == 12


def test_statistics_come_from_evenly_spaced_rows_beyond_the_cap(monkeypatch):
    monkeypatch.setattr(whitening_module, "MAX_FIT_ROWS", 100)
    x = _anisotropic(1000, 6)
    statistics = CovarianceAccumulator(6, len(x))
    for start in range(0, len(x), 37):  # chunk edges do not line up with the stride
        statistics.add(x[start:start + 37])
    assert statistics.stride == 10 and statistics.count == 100
    assert np.allclose(statistics.whitening(2, 0.0).mean, x[::10].mean(axis=0), atol=1e-6)


def test_whitening_recovers_groups_a_dominant_direction_hides():
    """What it is for: unrelated embeddings share a strong component and vary most along nuisance directions."""
    rng = np.random.default_rng(1)
    d, groups, per = 64, 8, 40
    centres = rng.normal(size=(groups, d))
    nuisance = rng.normal(size=(3, d))
    labels = np.repeat(np.arange(groups), per)
    x = 30.0 + centres[labels] + rng.normal(scale=8.0, size=(len(labels), 3)) @ nuisance + rng.normal(scale=0.5, size=(len(labels), d))
    x = unit_rows(x)

    def precision_at_5(vectors: np.ndarray) -> float:
        sims = vectors @ vectors.T
        np.fill_diagonal(sims, -np.inf)
        top = np.argsort(-sims, axis=1)[:, :5]
        return float((labels[top] == labels[:, None]).mean())

    raw, whitened = precision_at_5(x), precision_at_5(_fit(x, 16, 1.0).apply(x))
    assert raw < 0.3 and whitened > 0.9, (raw, whitened)


def test_file_round_trip_and_damage(tmp_path):
    fit = _fit(_anisotropic(500, 16), 4, 0.25)
    path = fit.write(tmp_path / "w.npz")
    back = Whitening.read(path)
    assert np.array_equal(back.mean, fit.mean) and np.array_equal(back.projection, fit.projection)
    assert (back.power, back.rows) == (0.25, 500)
    vector = _anisotropic(1, 16, seed=5)[0]
    assert back.apply(vector).shape == (4,) and np.isclose(np.linalg.norm(back.apply(vector)), 1.0)
    np.savez(tmp_path / "bad.npz", mean=np.zeros(16, np.float32), projection=np.zeros((8, 4), np.float32),
             power=np.float64(0.25), rows=np.int64(1))
    with pytest.raises(ValueError, match="do not fit"):
        Whitening.read(tmp_path / "bad.npz")
