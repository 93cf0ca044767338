"""The ANN stage: an approximate nearest-neighbour index over the stored embeddings, behind a backend seam.

``build_ann(config)`` builds the index of kind ``ann.kind`` (``hnsw``: FAISS HNSW; ``ivfpq``: FAISS IVF-PQ for
collections beyond RAM; ``auto``: HNSW within ``ann.memory_budget``, else IVF-PQ); ``load_ann(config,
model_id=...)`` returns a verified ``AnnIndex`` (``meta``, ``dim``, ``count``, ``labels()``,
``search(queries, k, **params)``); ``read_whitening(layout, meta)`` the re-ranking space fitted with it
(``whitening``); ``ann_state(layout, ...)`` is what ``status`` shows. The index is
described by ``output.dir/ann.json`` (``AnnMetadata``), which names every file of it.
"""

from imagerec.ann.base import AnnBackend, AnnIndex, AnnIndexError, AnnSettings
from imagerec.ann.build import BuildSummary, build_ann, build_index
from imagerec.ann.files import FULL_HASH_MAX_BYTES, AnnFile, file_hashes
from imagerec.ann.hnsw import HnswBackend, HnswIndex
from imagerec.ann.ivfpq import IvfPqBackend, IvfPqIndex
from imagerec.ann.load import ann_state, load_ann, open_index, read_metadata, read_whitening
from imagerec.ann.manifest import FORMAT, FORMAT_VERSION, AnnMetadata, read_manifest
from imagerec.ann.registry import backend, kinds
from imagerec.ann.whitening import Whitening

__all__ = [
    "FORMAT", "FORMAT_VERSION", "FULL_HASH_MAX_BYTES", "AnnBackend", "AnnFile", "AnnIndex", "AnnIndexError",
    "AnnMetadata", "AnnSettings", "BuildSummary", "HnswBackend", "HnswIndex", "IvfPqBackend", "IvfPqIndex", "ann_state", "backend",
    "build_ann", "build_index", "file_hashes", "kinds", "load_ann", "open_index", "read_manifest", "read_metadata",
    "read_whitening", "Whitening",
]
