"""Distributed indexing on a Ray cluster (``index --executor ray``; the optional extra ``imagerec[ray]``).

The driver scans and plans as ``index`` does and writes the files that need work as a Parquet
manifest (``manifest``); Ray Data decodes and embeds them into Parquet shards (``ray_pipeline``,
``shards``); the shards are then upserted into the store (``ingest``). Nothing here imports Ray or
pyarrow at import time of ``imagerec``: the plain install does not need them.
"""

from __future__ import annotations

from imagerec.errors import ImagerecError

INSTALL_HINT = "pip install 'imagerec[ray]'"


def require_ray() -> None:
    """An ``ImagerecError`` naming the extra to install unless Ray Data (and pyarrow) can be imported."""
    try:
        import pyarrow  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise ImagerecError(f"index.executor: ray needs Ray ({exc.name} is not installed): {INSTALL_HINT}") from None


def require_pyarrow() -> None:
    """An ``ImagerecError`` naming the extra to install unless pyarrow (for reading shards) can be imported."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise ImagerecError(f"reading shards needs pyarrow, which is not installed: {INSTALL_HINT}") from None
