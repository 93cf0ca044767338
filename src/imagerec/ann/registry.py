"""``ann.kind`` → backend. Adding an index kind = one class implementing ``AnnBackend`` + one entry here."""

from __future__ import annotations

from imagerec.ann.base import AnnBackend, AnnIndexError
from imagerec.ann.hnsw import HnswBackend
from imagerec.ann.ivfpq import IvfPqBackend

_BACKENDS: dict[str, type[AnnBackend]] = {b.kind: b for b in (HnswBackend, IvfPqBackend)}


def kinds() -> tuple[str, ...]:
    """The index kinds this imagerec can build and load."""
    return tuple(_BACKENDS)


def backend(kind: str) -> type[AnnBackend]:
    """The backend class of ``kind``; ``AnnIndexError`` for a kind this imagerec does not know."""
    try:
        return _BACKENDS[kind]
    except (KeyError, TypeError):
        raise AnnIndexError(f"unknown ANN index kind {kind!r} (known: {', '.join(kinds())})") from None
