"""imagerec: a local image recommender for large photo collections.

Library API (the CLI is a thin layer over these)::

    import imagerec
    config = imagerec.load_config("config_miniset.yaml")
    summary = imagerec.index(config)
    print(imagerec.status(config).images)

Heavy modules (torch) are imported only when a function needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "load_config": ("config", "load_config"),
    "Config": ("config", "Config"),
    "index": ("indexer", "index_collection"),
    "IndexSummary": ("indexer", "IndexSummary"),
    "status": ("status", "collection_status"),
    "train_embeddings": ("train", "train_embeddings"),
    "build_ann": ("ann", "build_ann"),
    "load_ann": ("ann", "load_ann"),
    "Recommender": ("query", "Recommender"),
    "run_query": ("query", "run_query"),
    "Weights": ("query", "Weights"),
    "write_random_model": ("model", "write_random_model"),
    "load_model": ("model", "load_model"),
    "ImagerecError": ("errors", "ImagerecError"),
}

__all__ = sorted(_LAZY)

if TYPE_CHECKING:  # pragma: no cover
    from .config import Config, load_config
    from .errors import ImagerecError
    from .indexer import IndexSummary
    from .indexer import index_collection as index
    from .model import load_model, write_random_model
    from .ann import build_ann, load_ann
    from .query import Recommender, Weights, run_query
    from .status import collection_status as status
    from .train import train_embeddings


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'imagerec' has no attribute {name!r}")
    import importlib

    module, attr = _LAZY[name]
    return getattr(importlib.import_module(f".{module}", __name__), attr)
