"""``imagerec.open(config)``: one collection (a config's image root and output folder) as an object.

The methods run the stages; ``similar`` answers from a shared, request-safe ``Recommender`` that is
opened on first use and reopened after ``index`` or ``build_ann`` changed what it serves.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from imagerec.closing import Closing
from imagerec.config import Config, load_config
from imagerec.progress import ProgressCallback


class Collection(Closing):
    """The collection described by ``config``. Safe to share between threads for ``similar``/``query``."""

    def __init__(self, config: Config):
        self.config = config
        self._lock = threading.Lock()
        self._recommender = None
        self._retired: list = []  # replaced recommenders, closed with the collection (a thread may still use one)

    @property
    def layout(self):
        """Paths of every artefact in ``output.dir``."""
        return self.config.output.layout

    def index(self, *, progress: ProgressCallback | None = None, **options):
        """Index ``data.image_root`` (see ``imagerec.indexing.run.index_collection``); returns its summary."""
        from imagerec.indexing.run import index_collection

        summary = index_collection(self.config, progress=progress, **options)
        self.reopen()
        return summary

    def ingest(self, paths: Sequence[str | os.PathLike], *, progress: ProgressCallback | None = None):
        """Upsert the Parquet shards in ``paths`` (see ``imagerec.indexing.distributed.ingest``); returns the summary."""
        from imagerec.indexing.distributed.ingest import ingest_shards

        summary = ingest_shards(self.config, [Path(p) for p in paths], progress=progress)
        self.reopen()
        return summary

    def status(self):
        """What the collection holds (``CollectionStatus``)."""
        from imagerec.tools.status import collection_status

        return collection_status(self.config)

    def build_ann(self, *, progress: ProgressCallback | None = None):
        """Build the ANN index over the stored embeddings; returns its ``BuildSummary``."""
        from imagerec.ann import build_ann

        summary = build_ann(self.config, progress=progress)
        self.reopen()
        return summary

    def train_embeddings(self, *, resume: bool = False, progress: ProgressCallback | None = None, **options):
        """SimCLR training on the collection's images (``imagerec.train.run.train_embeddings``)."""
        from imagerec.train.run import train_embeddings

        return train_embeddings(self.config, resume=resume, progress=progress, **options)

    def query(self, *, ids: Sequence[int] = (), images: Sequence[str | os.PathLike] = (), k: int | None = None,
              weights: Mapping[str, float] | None = None, include_query: bool = False):
        """The full ``QueryResponse`` (results, notices, timings, data version) for ids and/or image files."""
        from imagerec.search.fusion import Weights

        rec = self.recommender()
        fused = Weights.merged(rec.weights, weights) if weights else None
        return rec.search(ids=ids, images=images, top_k=k, weights=fused, include_query=include_query)

    def similar(self, *, ids: Sequence[int] = (), images: Sequence[str | os.PathLike] = (), k: int | None = None,
                weights: Mapping[str, float] | None = None, include_query: bool = False):
        """The ``k`` most similar images as ``Result`` objects (``id``, absolute ``path``, ``score``,
        ``scores`` per signal, ``near_duplicate``); ``weights`` may name any of embedding/color/dhash."""
        return self.query(ids=ids, images=images, k=k, weights=weights, include_query=include_query).results

    def duplicates(self, settings=None, *, progress: ProgressCallback | None = None, **overrides):
        """Groups of duplicate images (``imagerec.dedup.find_duplicates``): ``settings`` a ``DuplicateSettings``,
        or the config's ``duplicates`` section with keyword ``overrides`` (e.g. ``max_bits=8, tier="near"``)."""
        from imagerec.dedup import DuplicateSettings, find_duplicates

        settings = settings or DuplicateSettings.from_config(self.config, **overrides)
        return find_duplicates(self.config, settings, progress=progress)

    def recommender(self):
        """The shared ``Recommender`` (opened on first use)."""
        with self._lock:
            if self._recommender is None:
                from imagerec.search.recommender import Recommender

                self._recommender = Recommender(self.config)
            return self._recommender

    def reopen(self) -> None:
        """The next ``similar``/``query`` opens a fresh recommender (after the index or the ANN changed)."""
        with self._lock:
            if self._recommender is not None:
                self._retired.append(self._recommender)
                self._recommender = None

    def close(self) -> None:
        with self._lock:
            for rec in [*self._retired, *([self._recommender] if self._recommender else [])]:
                rec.close()
            self._retired, self._recommender = [], None


def open_collection(config: Config | str | os.PathLike) -> Collection:
    """The collection of a config file (path) or a ``Config``."""
    if not isinstance(config, Config):
        config = load_config(Path(config))
    return Collection(config)
