"""Shards → the collection store, through ``IndexWriter`` (one transaction per batch, as ``index`` writes).

Rows are upserts by path: ingesting a shard twice changes nothing, and a row never half-exists. Every
shard is checked (footer, columns, model, histogram) before the first row is written, so a damaged or
foreign file stops ``ingest`` with nothing written.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from imagerec.config import Config
from imagerec.data.features import HistogramSpec
from imagerec.indexing.summary import IndexProgress, IndexSummary
from imagerec.indexing.writer import IndexWriter
from imagerec.progress import ProgressCallback
from imagerec.store import Store
from imagerec.store.lock import writer_lock

INGEST_BATCH = 256  # rows per transaction when the config's batch size is not at hand


def write_shards(shards: Sequence[Path], writer: IndexWriter, batch_size: int, keep=None) -> None:
    """Write every row of ``shards`` (only those whose key is in ``keep``, if given) through ``writer``."""
    from imagerec.indexing.distributed.shards import iter_batches

    for shard in shards:
        for batch, good, vectors in iter_batches(shard, batch_size, keep):
            writer.write(batch, good, vectors)


def ingest_shards(config: Config, paths: Sequence[Path], *, progress: ProgressCallback | None = None) -> IndexSummary:
    """Upsert the shards in ``paths`` (files or folders of ``.parquet`` files) into the collection of ``config``.

    Every shard must have been made with the config's histogram settings and the collection's model
    (or the collection has none yet); anything else is a ``ShardError`` before a row is written.
    """
    from imagerec.indexing.distributed import require_pyarrow

    require_pyarrow()
    started = time.perf_counter()
    shards, total, meta = _checked(config, paths)
    layout = config.output.layout
    with writer_lock(layout.index_lock), Store(layout.db) as store:
        summary = IndexSummary(model_id=meta.model_id if meta else None, model_missing=meta is None or meta.model_id is None)
        if meta is not None:
            _adopt_model(store, meta, shards[0])
            tracker = IndexProgress(progress, total, summary)
            writer = IndexWriter(store, meta.histogram_key, summary, tracker, meta.skip_key)
            try:
                write_shards(shards, writer, config.index.batch_size)
            except KeyboardInterrupt:
                summary.interrupted = True  # committed batches stay; ingesting again is harmless
    summary.elapsed_s = time.perf_counter() - started
    return summary


def _checked(config: Config, paths: Sequence[Path]):
    """The shard files, their total rows and their common ``ShardMeta`` (None when all are empty)."""
    from imagerec.indexing.distributed.shards import ShardError, list_shards, read_meta

    shards = list_shards(paths)
    if not shards:
        raise ShardError(f"no .parquet shards in {', '.join(map(str, paths))}")
    hist = config.features.histogram
    expected_hist = HistogramSpec(hist.space, hist.bins).key
    total, common = 0, None
    for shard in shards:
        rows, meta = read_meta(shard)
        total += rows
        if meta is None:
            continue
        if meta.histogram_key != expected_hist:
            raise ShardError(f"{shard}: histograms made with {meta.histogram_key}, but features.histogram is "
                             f"{expected_hist}; ingest with the config the shards were made with")
        if common is not None and meta != common:
            raise ShardError(f"{shard}: made with another model or other settings than {shards[0]}; ingest them separately")
        common = meta
    return shards, total, common


def _adopt_model(store: Store, meta, first_shard: Path) -> None:
    """Record the shards' model as the collection's; a collection embedded with another model is a ``ShardError``."""
    from imagerec.indexing.distributed.shards import ShardError

    if meta.model_id is None:
        return
    if store.model_id not in (None, meta.model_id):
        raise ShardError(f"{first_shard}: embedded with model {meta.model_id}, but the collection uses {store.model_id}; "
                         "re-run 'index --executor ray' with this collection's config instead")
    if store.model_id is None:
        store.set_model_id(meta.model_id, meta.model_init)
