"""The single writer: decoded images → image rows, skip records and embeddings, one transaction per batch.

``BatchSink`` collects the executor's results into batches of ``batch_size``, embeds each batch
once (``EmbedStep``) and hands it to ``IndexWriter``, which writes it and counts it into the summary.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from imagerec.data import loading
from imagerec.indexing.decode import Decoded
from imagerec.indexing.embed_step import EmbedStep
from imagerec.indexing.summary import IndexProgress, IndexSummary
from imagerec.store import ImageRecord, SkipRecord, Store


class IndexWriter:
    """Writes batches into ``store`` and counts what each did into ``summary``; reports progress per batch."""

    def __init__(self, store: Store, hist_key: str, summary: IndexSummary, progress: IndexProgress, skip_key: str = ""):
        self.store = store
        self.skip_key = skip_key
        self.hist_key = hist_key
        self.summary = summary
        self.progress = progress

    def write(self, batch: Sequence[Decoded], good: Sequence[Decoded], vectors: np.ndarray | None) -> None:
        """Write ``batch`` in one transaction; ``vectors[i]`` is the embedding of ``good[i]`` (None: no model)."""
        summary, model_id = self.summary, self.summary.model_id
        summary.stage_s["decode"] += sum(d.decode_s for d in batch)
        summary.stage_s["features"] += sum(d.features_s for d in batch)
        records, embeddings = [], []
        for i, d in enumerate(good):
            vector = None if vectors is None else vectors[i]
            if d.item.embedding_only:
                embeddings.append((d.item.image_id, vector, model_id))
                continue
            f = d.item.file
            records.append(ImageRecord(f.rel_path, f.size, f.mtime_ns, d.width, d.height, d.format,
                                       d.histogram, self.hist_key, d.dhash, vector, model_id))
        skips = self._skips(batch)
        t0 = time.perf_counter()
        result = self.store.write_batch(records, skips, embeddings)
        summary.stage_s["store"] += time.perf_counter() - t0
        summary.indexed += result.inserted
        summary.updated += result.updated
        summary.embedded += len(embeddings)
        summary.skipped.update(s.reason for s in skips)
        self.progress.advance(len(batch))

    def _skips(self, batch: Sequence[Decoded]) -> list[SkipRecord]:
        """Skip records of the failed images; a file that vanished since the scan is only counted."""
        skips = []
        for d in batch:
            if d.error is None:
                continue
            if d.error.reason == loading.VANISHED:
                self.summary.vanished += 1
                continue
            f = d.item.file
            skips.append(SkipRecord(f.rel_path, f.size, f.mtime_ns, d.error.reason, d.error.detail, self.skip_key))
        return skips


class BatchSink:
    """Collects decoded results; every ``batch_size`` of them are embedded once and written once."""

    def __init__(self, batch_size: int, embed: EmbedStep, writer: IndexWriter):
        self.batch_size = batch_size
        self.embed = embed
        self.writer = writer
        self.pending: list[Decoded] = []

    def add(self, results: Sequence[Decoded]) -> None:
        """Take one job's results; writes every batch that is full."""
        self.pending.extend(results)
        while len(self.pending) >= self.batch_size:
            batch, self.pending = self.pending[: self.batch_size], self.pending[self.batch_size :]
            self._process(batch)

    def flush(self) -> None:
        """Write what is pending (the last, partial batch)."""
        batch, self.pending = self.pending, []
        if batch:
            self._process(batch)

    def _process(self, batch: list[Decoded]) -> None:
        good = [d for d in batch if d.error is None]
        self.writer.write(batch, good, self.embed(good))
