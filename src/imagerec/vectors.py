"""Float32 vectors: unit normalisation and the little-endian BLOB encoding the store uses."""

from __future__ import annotations

import numpy as np


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Float32 copy of (n, d) ``vectors`` (or one (d,) vector) with unit L2 norm; zero rows stay zero."""
    out = np.array(vectors, dtype=np.float32, order="C")
    norms = np.linalg.norm(out, axis=-1, keepdims=True)
    np.divide(out, norms, out=out, where=norms > 0)
    return out


def to_blob(vector: np.ndarray) -> bytes:
    """Little-endian float32 bytes of ``vector``."""
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def from_blob(blob: bytes) -> np.ndarray:
    """The float32 vector stored as ``blob`` (read-only view)."""
    return np.frombuffer(blob, dtype="<f4")
