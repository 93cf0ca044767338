"""The ``index`` stage: scan → plan (what changed) → decode + features in worker processes → embed in
batches → write, one transaction per batch.

``index_collection`` is the edge: it reads the ``Config`` once, into the small frozen settings
objects below, and everything further down sees only those. Everything between the stages is
bounded: the scan is a generator, the plan looks paths up in SQLite a chunk at a time, the executor
keeps a few jobs in flight, and at most one model batch waits in memory. A re-run decodes nothing
whose (path, size, mtime) is unchanged; a new model recomputes only embeddings; files that are gone
are removed once a scan has completed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Generator, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from imagerec.config import Config
from imagerec.data import loading
from imagerec.data.features import HistogramSpec, decode_min_side
from imagerec.embed.base import Embedder
from imagerec.errors import ImagerecError
from imagerec.indexing.decode import Decoded, DecodeSettings, crashed, decode_job
from imagerec.indexing.embed_step import EmbedStep
from imagerec.indexing.executors import Executor, LocalExecutor
from imagerec.indexing.plan import PLAN_CHUNK, ScanSettings, WorkItem, batched, plan_chunk
from imagerec.indexing.summary import IndexProgress, IndexSummary
from imagerec.indexing.writer import BatchSink, IndexWriter
from imagerec.progress import ProgressCallback
from imagerec.store import Store
from imagerec.store.lock import writer_lock

__all__ = ["IndexSettings", "IndexSummary", "begin_run", "index_collection", "index_settings", "load_index_embedder",
           "local_executor", "make_sink", "make_writer", "new_summary", "plan_work", "remove_gone", "run_index"]

JOB_SIZE = 32  # images per worker job (fewer, larger jobs: less IPC per image)


@dataclass(frozen=True, slots=True)
class IndexSettings:
    """Everything an index run needs from the config, read once."""

    scan: ScanSettings
    decode: DecodeSettings
    batch_size: int  # images per model batch and per transaction
    workers: int
    removal: "RemovalGuard"
    retry_skipped: bool = False  # decode files recorded as skipped even if nothing changed


@dataclass(frozen=True, slots=True)
class RemovalGuard:
    """When a complete scan may delete the rows of files it did not find.

    An unmounted drive, a network share that is down or a typo in the image root looks like "every
    file was deleted": removing more than ``max_fraction`` of the stored images (or all of them) waits
    for ``prune``.
    """

    max_fraction: float
    prune: bool

    def allows(self, gone: int, stored: int) -> bool:
        return self.prune or gone == 0 or (gone < stored and gone <= self.max_fraction * stored)


def index_settings(config: Config, embedder: Embedder | None, prune: bool = False,
                   retry_skipped: bool = False) -> IndexSettings:
    """The settings of an index run of ``config`` with ``embedder`` (None: histograms and hashes only)."""
    preprocess = embedder.preprocess if embedder is not None else None
    min_side = decode_min_side(preprocess.min_side if preprocess is not None else None)
    histogram = config.features.histogram
    decode = DecodeSettings(
        root=os.fsencode(config.data.image_root),
        load=loading.LoadSettings.from_config(config.index, min_side),
        histogram=HistogramSpec(histogram.space, histogram.bins),
        preprocess=preprocess,
    )
    return IndexSettings(ScanSettings(Path(config.data.image_root), config.index.follow_symlinks), decode,
                         config.index.batch_size, config.index.workers or os.cpu_count() or 1,
                         RemovalGuard(config.index.max_removal_fraction, prune), retry_skipped)


def load_index_embedder(config: Config, say=None) -> Embedder | None:
    """The collection's embedder (model file, else the configured pretrained network), or None when there is none.

    On the CPU, torch gets ``runtime.threads`` threads (this is the stage's edge); an embedder passed
    to ``index_collection`` is used as it is.
    """
    from imagerec.embed import ModelChoice, load_chosen_embedder, set_torch_threads

    embedder = load_chosen_embedder(ModelChoice.from_config(config), device=config.runtime.device,
                                    threads=config.runtime.threads, say=say)
    if embedder is not None and embedder.runs_on_cpu:
        set_torch_threads(config.runtime.threads)
    return embedder


def index_collection(
    config: Config,
    *,
    progress: ProgressCallback | None = None,
    embedder: Embedder | None = None,
    executor: Executor | None = None,
    prune: bool = False,
    retry_skipped: bool = False,
) -> IndexSummary:
    """Index ``config.data.image_root`` into ``config.output.layout.db``; returns what was done.

    ``progress`` receives ``ProgressEvent("index", done, total, {"skipped": n})`` as images finish.
    ``embedder`` overrides the model loaded from ``config.output.layout.model`` (tests, benchmarks);
    ``executor`` overrides the local process pool of ``index.workers`` processes; without one,
    ``index.executor: ray`` decodes and embeds on a Ray cluster (``indexing.distributed``).
    Ctrl-C stops after committing finished work; the summary then has ``interrupted=True``.
    Rows of files that are gone are removed unless that would be more than ``index.max_removal_fraction``
    of the collection (or all of it): then they are kept (``removal_held``) unless ``prune`` is True.
    Skipped files are tried again when the load settings they were skipped under changed, or all with ``retry_skipped``.
    """
    started = time.perf_counter()
    root = Path(config.data.image_root)
    if not root.is_dir():
        raise ImagerecError(f"data.image_root: {root} is not a folder; fix it in {config.source or 'the config'}")
    distributed = executor is None and config.index.executor == "ray"
    if distributed:
        from imagerec.indexing.distributed import require_ray

        require_ray()  # before the lock and the model: a missing extra is one line at once
    with writer_lock(config.output.layout.index_lock):  # first: a second writer learns it at once
        if embedder is None:
            embedder = load_index_embedder(config)
        settings = index_settings(config, embedder, prune, retry_skipped)
        if distributed:
            from imagerec.indexing.distributed.driver import DistributedSettings, index_distributed

            summary = index_distributed(settings, DistributedSettings.from_config(config, embedder, progress is not None),
                                        config.output.layout.db, embedder, progress)
        else:
            summary = run_index(settings, config.output.layout.db, embedder,
                                executor or local_executor(settings, embedder), progress)
    summary.elapsed_s = time.perf_counter() - started  # the whole command, model loading included
    return summary


def local_executor(settings: IndexSettings, embedder: Embedder | None) -> LocalExecutor:
    """The default executor: ``settings.workers`` processes, enough jobs in flight to fill two model batches."""
    max_in_flight = max(2 * settings.workers, 2 * settings.batch_size // JOB_SIZE)
    return LocalExecutor(settings.workers, max_in_flight=max_in_flight,
                         yield_cpu=embedder is not None and embedder.runs_on_cpu)


def run_index(
    settings: IndexSettings, db: Path, embedder: Embedder | None, executor: Executor, progress: ProgressCallback | None
) -> IndexSummary:
    """Scan, plan, decode (through ``executor``), embed and write into the store at ``db``."""
    started = time.perf_counter()
    summary, tracker = new_summary(settings, embedder, progress)
    tracker.advance(0)
    with Store(db) as store:
        stored_before = begin_run(store, embedder)
        jobs = batched(plan_work(store, settings, summary, tracker), JOB_SIZE)
        results = executor.map(jobs, decode_job, settings.decode, on_crash=crashed)
        sink = make_sink(store, settings, embedder, summary, tracker)
        summary.interrupted = not _drain(results, sink)
        if not summary.interrupted:  # only a complete scan knows which files are gone
            remove_gone(store, settings, summary, stored_before)
    summary.elapsed_s = time.perf_counter() - started
    return summary


def new_summary(settings: IndexSettings, embedder: Embedder | None,
                progress: ProgressCallback | None) -> tuple[IndexSummary, IndexProgress]:
    """An empty summary of a run with ``embedder``, and the progress tracker that counts into it."""
    summary = IndexSummary(model_id=embedder.model_id if embedder else None, model_missing=embedder is None)
    return summary, IndexProgress(progress, settings.scan.count() if progress else None, summary)


def begin_run(store: Store, embedder: Embedder | None) -> int:
    """Record the run's model and start a scan (``plan_work`` marks what it sees); returns the images stored before."""
    if embedder is not None:
        store.set_model_id(embedder.model_id, embedder.init)
    stored_before = store.count_images()
    store.begin_scan()
    return stored_before


def make_writer(store: Store, settings: IndexSettings, summary: IndexSummary, tracker: IndexProgress) -> IndexWriter:
    """The writer of this run's rows and skip records (histogram and load settings from ``settings``)."""
    return IndexWriter(store, settings.decode.histogram.key, summary, tracker, settings.decode.load.skip_key)


def make_sink(store: Store, settings: IndexSettings, embedder: Embedder | None, summary: IndexSummary,
              tracker: IndexProgress) -> BatchSink:
    """The embed step and the writer behind a batcher of ``settings.batch_size``."""
    return BatchSink(settings.batch_size, EmbedStep(embedder, summary.stage_s), make_writer(store, settings, summary, tracker))


def remove_gone(store: Store, settings: IndexSettings, summary: IndexSummary, stored_before: int) -> None:
    """After a complete scan: remove the rows of files it did not see, unless ``settings.removal`` holds them."""
    gone = store.count_unseen()
    if settings.removal.allows(gone, stored_before):
        summary.removed = store.remove_unseen()
    else:
        summary.removal_held = gone


def plan_work(store: Store, settings: IndexSettings, summary: IndexSummary, tracker: IndexProgress) -> Iterator[WorkItem]:
    """Yield the files that need work: scan, look each chunk up in the store, mark it seen, plan it."""
    for chunk in batched(settings.scan.files(stats=summary.scan), PLAN_CHUNK):
        paths = [f.rel_path for f in chunk]
        store.mark_seen(paths)
        plan = plan_chunk(chunk, store.lookup(paths), store.lookup_skipped(paths), settings.decode.histogram.key,
                          summary.model_id, settings.decode.load.skip_key, settings.retry_skipped)
        summary.unchanged += plan.unchanged
        summary.skipped_known += plan.skipped_known
        if plan.unchanged or plan.skipped_known:
            tracker.advance(plan.unchanged + plan.skipped_known)
        yield from plan.items


def _drain(results: Generator[list[Decoded], None, None], sink: BatchSink) -> bool:
    """Feed every job's results to ``sink``. False after Ctrl-C: the workers are stopped, decoded work is still written."""
    try:
        with closing(results):
            for job_results in results:
                sink.add(job_results)
        sink.flush()
        return True
    except KeyboardInterrupt:
        sink.flush()  # decoded work is finished work: keep it
        return False
