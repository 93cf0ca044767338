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
    "index": ("indexing.run", "index_collection"),
    "IndexSummary": ("indexing.run", "IndexSummary"),
    "status": ("tools.status", "collection_status"),
    "train_embeddings": ("train.run", "train_embeddings"),
    "build_ann": ("ann.hnsw", "build_ann"),
    "load_ann": ("ann.hnsw", "load_ann"),
    "Recommender": ("search.recommender", "Recommender"),
    "run_query": ("search.recommender", "run_query"),
    "Weights": ("search.recommender", "Weights"),
    "write_random_model": ("embed.files", "write_random_model"),
    "load_model": ("embed.files", "load_model"),
    "ImagerecError": ("errors", "ImagerecError"),
}

__all__ = sorted(_LAZY)

if TYPE_CHECKING:  # pragma: no cover
    from imagerec.config import Config, load_config
    from imagerec.errors import ImagerecError
    from imagerec.indexing.run import IndexSummary
    from imagerec.indexing.run import index_collection as index
    from imagerec.embed.files import load_model, write_random_model
    from imagerec.ann.hnsw import build_ann, load_ann
    from imagerec.search.recommender import Recommender, Weights, run_query
    from imagerec.tools.status import collection_status as status
    from imagerec.train.run import train_embeddings


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'imagerec' has no attribute {name!r}")
    import importlib

    module, attr = _LAZY[name]
    return getattr(importlib.import_module(f".{module}", __name__), attr)
