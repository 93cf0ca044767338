"""imagerec: a local image recommender for large photo collections.

Library API (the CLI is a thin layer over it)::

    import imagerec
    col = imagerec.open("config.yaml")          # the collection described by a config file (or a Config)
    col.index(); col.status(); col.build_ann()
    results = col.similar(ids=[12], k=10)        # or images=["a.jpg"], weights={"embedding": .7, "color": .2, "dhash": .1}

The stage functions are exported too (``imagerec.index(config)``, ``imagerec.build_ann(config)``, ...).
Heavy modules (torch, FAISS) are imported only when a function needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "open": ("collection", "open_collection"),
    "Collection": ("collection", "Collection"),
    "load_config": ("config", "load_config"),
    "Config": ("config", "Config"),
    "index": ("indexing.run", "index_collection"),
    "IndexSummary": ("indexing.run", "IndexSummary"),
    "status": ("tools.status", "collection_status"),
    "train_embeddings": ("train.run", "train_embeddings"),
    "build_ann": ("ann", "build_ann"),
    "load_ann": ("ann", "load_ann"),
    "Recommender": ("search.recommender", "Recommender"),
    "run_query": ("search.recommender", "run_query"),
    "Weights": ("search.fusion", "Weights"),
    "Result": ("search.recommender", "Result"),
    "ProgressEvent": ("progress", "ProgressEvent"),
    "find_duplicates": ("dedup", "find_duplicates"),
    "DuplicateSettings": ("dedup", "DuplicateSettings"),
    "write_random_model": ("embed.files", "write_random_model"),
    "load_model": ("embed.files", "load_model"),
    "ImagerecError": ("errors", "ImagerecError"),
}

__all__ = sorted(_LAZY)

if TYPE_CHECKING:  # pragma: no cover
    from imagerec.ann import build_ann, load_ann
    from imagerec.collection import Collection
    from imagerec.collection import open_collection as open
    from imagerec.config import Config, load_config
    from imagerec.dedup import DuplicateSettings, find_duplicates
    from imagerec.embed.files import load_model, write_random_model
    from imagerec.errors import ImagerecError
    from imagerec.indexing.run import IndexSummary
    from imagerec.indexing.run import index_collection as index
    from imagerec.progress import ProgressEvent
    from imagerec.search.fusion import Weights
    from imagerec.search.recommender import Recommender, Result, run_query
    from imagerec.tools.status import collection_status as status
    from imagerec.train.run import train_embeddings


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'imagerec' has no attribute {name!r}")
    import importlib

    module, attr = _LAZY[name]
    value = getattr(importlib.import_module(f"imagerec.{module}"), attr)
    globals()[name] = value  # cache it; also keeps a submodule import from ever shadowing an exported name
    return value
