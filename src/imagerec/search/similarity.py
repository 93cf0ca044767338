"""Similarity and distance measures, our own numpy code.

Every function accepts a single vector or a batch (rows) on either side and broadcasts, so one
query can be scored against many candidates in one call.
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-12


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray | float:
    """Cosine of the angle between vectors along the last axis, in [-1, 1]; 0 for a zero vector."""
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    dot = np.sum(a * b, axis=-1)
    norms = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return _scalar(np.where(norms > _EPS, dot / np.maximum(norms, _EPS), 0.0))


def histogram_intersection(p: np.ndarray, q: np.ndarray) -> np.ndarray | float:
    """Σ min(p, q) for L1-normalised histograms: 1 for identical, 0 for disjoint."""
    return _scalar(np.minimum(np.asarray(p, np.float32), np.asarray(q, np.float32)).sum(axis=-1))


def chi_square_distance(p: np.ndarray, q: np.ndarray) -> np.ndarray | float:
    """Symmetric chi-square distance ½ Σ (p−q)² / (p+q) over non-empty bins: 0 identical, 1 disjoint."""
    p = np.asarray(p, np.float32)
    q = np.asarray(q, np.float32)
    total = p + q
    diff2 = (p - q) ** 2
    terms = np.divide(diff2, total, out=np.zeros_like(diff2 * total), where=total > 0)
    return _scalar(0.5 * terms.sum(axis=-1))


def bhattacharyya_coefficient(p: np.ndarray, q: np.ndarray) -> np.ndarray | float:
    """Σ √(p·q) for L1-normalised histograms: 1 identical, 0 disjoint."""
    return _scalar(np.sqrt(np.asarray(p, np.float64) * np.asarray(q, np.float64)).sum(axis=-1))


def bhattacharyya_distance(p: np.ndarray, q: np.ndarray) -> np.ndarray | float:
    """Hellinger form of the Bhattacharyya distance, √(1 − BC): 0 identical, 1 disjoint."""
    coefficient = np.clip(bhattacharyya_coefficient(p, q), 0.0, 1.0)
    return _scalar(np.sqrt(1.0 - coefficient))


def hamming_distance(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray | int:
    """Number of differing bits between 64-bit hashes (Python ints or uint64/int64 arrays)."""
    x = np.bitwise_xor(_as_uint64(a), _as_uint64(b))
    result = np.bitwise_count(x).astype(np.int64)
    return int(result) if result.ndim == 0 else result


def hash_similarity(a: np.ndarray | int, b: np.ndarray | int, bits: int = 64) -> np.ndarray | float:
    """1 − Hamming/bits: 1 for identical hashes, 0 for complementary ones."""
    return _scalar(1.0 - np.asarray(hamming_distance(a, b), dtype=np.float64) / bits)


def _as_uint64(value: np.ndarray | int) -> np.ndarray:
    if isinstance(value, (int, np.integer)):
        return np.array(int(value) & 0xFFFFFFFFFFFFFFFF, dtype=np.uint64)
    array = np.asarray(value)
    if array.dtype.kind not in "iu":  # a list of Python ints ≥ 2**63 mixed with others is float64/object: keep exact
        exact = np.frompyfunc(lambda v: int(v) & 0xFFFFFFFFFFFFFFFF, 1, 1)(np.asarray(value, dtype=object))
        array = np.asarray(exact, dtype=np.uint64)
    return array.view(np.uint64) if array.dtype == np.int64 else array.astype(np.uint64)


def _scalar(value: np.ndarray):
    value = np.asarray(value)
    return float(value) if value.ndim == 0 else value
