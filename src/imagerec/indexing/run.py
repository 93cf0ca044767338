"""The ``index`` stage: scan → plan (what changed) → decode + features in worker processes → embed in
batches → write, one transaction per batch.

Everything between the stages is bounded: the scan is a generator, the plan looks paths up in SQLite
a chunk at a time, at most a few jobs are in flight in the pool, and at most one model batch waits in
memory. A re-run decodes nothing whose (path, size, mtime) is unchanged; a new model recomputes only
embeddings; files that are gone are removed once a scan has completed.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from imagerec.embed.base import Preprocess
from imagerec.data import loading
from imagerec.config import Config
from imagerec.errors import ImageLoadError, ImagerecError
from imagerec.data.features import HistogramSpec, color_histogram, decode_min_side, dhash, hash_to_int64
from imagerec.data.scan import ScannedFile, ScanStats, count_images, scan_images
from imagerec.store import ImageRecord, SkipRecord, Store

PLAN_CHUNK = 256  # paths looked up in SQLite at a time
JOB_SIZE = 32  # images per worker job (fewer, larger jobs: less IPC per image)
DECODER_CRASH = "decoder_crash"


@dataclass(frozen=True, slots=True)
class WorkItem:
    file: ScannedFile
    image_id: int | None  # set for an unchanged image that only needs its embedding
    embedding_only: bool


@dataclass(frozen=True, slots=True)
class JobSettings:
    root: bytes
    load: loading.LoadSettings
    histogram: HistogramSpec
    model_size: int | None


def job_settings(config: Config, embedder) -> JobSettings:
    """What a worker needs to decode ``config``'s images for ``embedder`` (None: no model input)."""
    model_size = embedder.image_size if embedder else None
    return JobSettings(
        root=os.fsencode(config.data.image_root),
        load=loading.LoadSettings.from_config(config.index, decode_min_side(model_size)),
        histogram=HistogramSpec(config.features.histogram.space, config.features.histogram.bins),
        model_size=model_size,
    )


@dataclass(slots=True)
class Decoded:
    """A worker's output for one image: features, the model input, or the reason it failed."""

    item: WorkItem
    width: int = 0
    height: int = 0
    format: str = ""
    histogram: np.ndarray | None = None
    dhash: int = 0
    pixels: np.ndarray | None = None
    error: ImageLoadError | None = None
    decode_s: float = 0.0  # worker time, summed into IndexSummary.stage_s
    features_s: float = 0.0


@dataclass
class IndexSummary:
    """What one ``index`` run did."""

    indexed: int = 0
    updated: int = 0
    embedded: int = 0
    unchanged: int = 0
    removed: int = 0
    skipped: Counter = field(default_factory=Counter)  # newly recorded, by reason
    skipped_known: int = 0  # recorded earlier and unchanged since
    vanished: int = 0
    scan: ScanStats = field(default_factory=ScanStats)
    model_id: str | None = None
    model_missing: bool = False
    interrupted: bool = False
    elapsed_s: float = 0.0
    stage_s: Counter = field(default_factory=Counter)

    @property
    def processed(self) -> int:
        """Images decoded this run (indexed, updated, embedded or newly skipped)."""
        return self.indexed + self.updated + self.embedded + sum(self.skipped.values())

    @property
    def images_per_second(self) -> float:
        return self.processed / self.elapsed_s if self.elapsed_s > 0 else 0.0


ProgressFactory = Callable[[int | None], "Progress"]


class Progress:
    """Minimal progress sink; the CLI passes a tqdm-backed one."""

    def update(self, n: int, summary: IndexSummary) -> None:  # noqa: D401 - interface
        pass

    def close(self) -> None:
        pass


def index_collection(
    config: Config,
    *,
    progress: Callable[[int], Progress] | None = None,
    embedder=None,
) -> IndexSummary:
    """Index ``config.data.image_root`` into ``config.output.layout.db``; returns what was done.

    ``progress`` is called with the number of image files found and returns a ``Progress``.
    ``embedder`` overrides the model loaded from ``config.output.layout.model`` (tests, benchmarks).
    Ctrl-C stops after committing finished work; the summary then has ``interrupted=True``.
    """
    started = time.perf_counter()
    summary = IndexSummary()
    root = Path(config.data.image_root)
    if not root.is_dir():
        raise ImagerecError(f"data.image_root: {root} is not a folder; fix it in {config.source or 'the config'}")
    if embedder is None:
        embedder = load_embedder(config)
    summary.model_id = embedder.model_id if embedder else None
    summary.model_missing = embedder is None
    settings = job_settings(config, embedder)
    hist_spec = settings.histogram
    workers = config.index.workers or os.cpu_count() or 1
    bar = progress(count_images(root, follow_symlinks=config.index.follow_symlinks)) if progress else Progress()

    with Store(config.output.layout.db) as store:
        if embedder is not None:
            store.set_model_id(embedder.model_id)
        store.begin_scan()
        plan = _plan(store, root, config, hist_spec.key, summary.model_id, summary, bar)
        writer = BatchWriter(store, embedder, config.index.batch_size, hist_spec.key, summary, bar)
        scan_complete = False
        try:
            _run_jobs(plan, settings, workers, writer)
            writer.flush()
            scan_complete = True
        except KeyboardInterrupt:
            summary.interrupted = True
            writer.flush()  # decoded work is finished work: keep it
        finally:
            bar.close()
        if scan_complete:
            summary.removed = store.remove_unseen()
    summary.elapsed_s = time.perf_counter() - started
    return summary


def load_embedder(config: Config):
    """The embedder for ``config.output.layout.model``, or None when no model file exists yet."""
    if not config.output.layout.model.exists():
        return None
    from imagerec.embed.files import Embedder, load_model, select_device

    return Embedder(load_model(config.output.layout.model), select_device(config.runtime.device), config.runtime.threads)


def _plan(
    store: Store, root: Path, config: Config, hist_key: str, model_id: str | None, summary: IndexSummary, bar: Progress
) -> Iterator[WorkItem]:
    """Yield the files that need work, comparing the scan with the store a chunk at a time."""
    chunk: list[ScannedFile] = []
    for scanned in scan_images(root, follow_symlinks=config.index.follow_symlinks, stats=summary.scan):
        chunk.append(scanned)
        if len(chunk) == PLAN_CHUNK:
            yield from _plan_chunk(store, chunk, hist_key, model_id, summary, bar)
            chunk = []
    yield from _plan_chunk(store, chunk, hist_key, model_id, summary, bar)


def _plan_chunk(
    store: Store, chunk: list[ScannedFile], hist_key: str, model_id: str | None, summary: IndexSummary, bar: Progress
) -> Iterator[WorkItem]:
    paths = [f.rel_path for f in chunk]
    store.mark_seen(paths)
    stored = store.lookup(paths)
    skipped = store.lookup_skipped(paths)
    untouched = 0
    for scanned in chunk:
        state = stored.get(scanned.rel_path)
        same_file = state is not None and (state.size, state.mtime_ns) == (scanned.size, scanned.mtime_ns)
        if same_file and state.histogram_key == hist_key:
            if model_id is None or state.model_id == model_id:
                summary.unchanged += 1
                untouched += 1
            else:
                yield WorkItem(scanned, state.image_id, embedding_only=True)
        elif state is None and skipped.get(scanned.rel_path) == (scanned.size, scanned.mtime_ns):
            summary.skipped_known += 1
            untouched += 1
        else:
            yield WorkItem(scanned, None, embedding_only=False)
    if untouched:
        bar.update(untouched, summary)


def _jobs(items: Iterator[WorkItem], size: int) -> Iterator[list[WorkItem]]:
    job: list[WorkItem] = []
    for item in items:
        job.append(item)
        if len(job) == size:
            yield job
            job = []
    if job:
        yield job


def _run_jobs(plan: Iterator[WorkItem], settings: JobSettings, workers: int, writer: "BatchWriter") -> None:
    """Feed jobs to a process pool, at most a few in flight; hand results to the writer as they finish.

    If a decoder kills a worker process (a segfault in a C decoder), the pool is rebuilt and the
    images that were in flight are retried one at a time, so only the image that crashes again is
    recorded as skipped.
    """
    jobs = _jobs(plan, JOB_SIZE)
    suspects: list[WorkItem] = []
    max_in_flight = max(2 * workers, 2 * writer.batch_size // JOB_SIZE)
    while True:
        pool = ProcessPoolExecutor(
            workers, mp_context=get_context("spawn"), initializer=_worker_init, initargs=(writer.cpu_bound_model,)
        )
        in_flight: dict[Future, list[WorkItem]] = {}
        isolated: set[Future] = set()
        try:
            if suspects:
                _check_workers_start(pool)
            while True:
                while len(in_flight) < (1 if suspects or isolated else max_in_flight):
                    from_suspects = bool(suspects)
                    job = [suspects.pop()] if from_suspects else next(jobs, None)
                    if job is None:
                        break
                    future = pool.submit(decode_job, job, settings)
                    in_flight[future] = job
                    if from_suspects:
                        isolated.add(future)
                if not in_flight:
                    return
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    results = future.result()
                    del in_flight[future]
                    isolated.discard(future)
                    writer.add(results)
        except BrokenProcessPool:
            lost = [item for job in in_flight.values() for item in job]
            if len(lost) == 1 and isolated:
                crash = ImageLoadError(DECODER_CRASH, "the image decoder crashed on this file")
                writer.add([Decoded(lost[0], error=crash)])
            else:
                suspects.extend(lost)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _check_workers_start(pool: ProcessPoolExecutor) -> None:
    """Before blaming images for a broken pool: can a fresh worker run anything at all?"""
    try:
        pool.submit(os.getpid).result()
    except BrokenProcessPool:
        raise ImagerecError(
            "image decoding worker processes die on start-up, whatever the image; in a script, put the code "
            "that calls imagerec under \"if __name__ == '__main__':\" (workers are spawned, not forked)"
        ) from None


def _worker_init(yield_to_model: bool) -> None:
    # Ctrl-C goes to the whole process group; the parent alone decides how to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if yield_to_model:
        # The CPU model is the bottleneck and its threads stall when decoders preempt them: decode in the
        # cycles the model leaves idle instead (SCHED_IDLE on Linux, the lowest nice level elsewhere).
        if hasattr(os, "SCHED_IDLE"):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        else:
            os.nice(19)
    # C decoders (libtiff) print warnings straight to fd 2; failures are recorded as skip reasons instead.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)


def decode_job(items: list[WorkItem], settings: JobSettings) -> list[Decoded]:
    """Worker entry point: load each image and compute its features and model input."""
    return [decode_one(item, settings) for item in items]


def decode_one(item: WorkItem, settings: JobSettings) -> Decoded:
    path = os.path.join(settings.root, item.file.rel_path)
    t0 = time.perf_counter()
    try:
        loaded = loading.load_image(path, settings.load, item.file.format_hint)
        t1 = time.perf_counter()
        result = Decoded(item, loaded.width, loaded.height, loaded.format, decode_s=t1 - t0)
        if not item.embedding_only:
            result.histogram = color_histogram(loaded.image, settings.histogram)
            result.dhash = hash_to_int64(dhash(loaded.image))
        if settings.model_size:
            result.pixels = Preprocess(settings.model_size)(loaded.image)
        result.features_s = time.perf_counter() - t1
        return result
    except ImageLoadError as exc:
        return Decoded(item, error=exc, decode_s=time.perf_counter() - t0)
    except Exception as exc:  # a bug or an exotic failure must cost one image, not the run
        error = ImageLoadError(loading.CORRUPT, f"{type(exc).__name__}: {exc}"[:300])
        return Decoded(item, error=error, decode_s=time.perf_counter() - t0)


class BatchWriter:
    """Collects decoded images, embeds them a batch at a time, writes each batch in one transaction."""

    def __init__(self, store: Store, embedder, batch_size: int, hist_key: str, summary: IndexSummary, bar: Progress):
        self.store = store
        self.embedder = embedder
        self.batch_size = batch_size
        self.hist_key = hist_key
        self.summary = summary
        self.bar = bar
        self.pending: list[Decoded] = []
        self.cpu_bound_model = embedder is not None and embedder.device.type == "cpu"

    def add(self, results: list[Decoded]) -> None:
        self.pending.extend(results)
        while len(self.pending) >= self.batch_size:
            batch, self.pending = self.pending[: self.batch_size], self.pending[self.batch_size :]
            self._write(batch)

    def flush(self) -> None:
        batch, self.pending = self.pending, []
        if batch:
            self._write(batch)

    def _write(self, batch: list[Decoded]) -> None:
        self.summary.stage_s["decode"] += sum(d.decode_s for d in batch)
        self.summary.stage_s["features"] += sum(d.features_s for d in batch)
        good = [d for d in batch if d.error is None]
        vectors: np.ndarray | None = None
        if self.embedder is not None and good:
            t0 = time.perf_counter()
            vectors = self.embedder.embed(np.stack([d.pixels for d in good]))
            self.summary.stage_s["embed"] += time.perf_counter() - t0
        model_id = self.summary.model_id
        records, embeddings, skips = [], [], []
        for i, d in enumerate(good):
            vector = None if vectors is None else vectors[i]
            if d.item.embedding_only:
                embeddings.append((d.item.image_id, vector, model_id))
                continue
            f = d.item.file
            records.append(ImageRecord(f.rel_path, f.size, f.mtime_ns, d.width, d.height, d.format,
                                       d.histogram, self.hist_key, d.dhash, vector, model_id))
        for d in batch:
            if d.error is None:
                continue
            if d.error.reason == loading.VANISHED:
                self.summary.vanished += 1
                continue
            f = d.item.file
            skips.append(SkipRecord(f.rel_path, f.size, f.mtime_ns, d.error.reason, d.error.detail))
        t0 = time.perf_counter()
        result = self.store.write_batch(records, skips, embeddings)
        self.summary.stage_s["store"] += time.perf_counter() - t0
        self.summary.indexed += result.inserted
        self.summary.updated += result.updated
        self.summary.embedded += len(embeddings)
        self.summary.skipped.update(s.reason for s in skips)
        self.bar.update(len(batch), self.summary)
