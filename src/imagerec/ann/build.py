"""``build-ann``: an ANN index over the stored embeddings, by the backend ``ann.kind`` names.

Crash-safe multi-file replacement: each index file gets a build-unique name and is written via temp
file + fsync + rename; then ``ann.json`` is replaced atomically (the single commit point); then the
files of the previous index (and of older imagerec versions) are removed. A kill at any moment leaves
the previous index usable; the next build removes what the killed one left.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from imagerec.ann.base import AnnBackend, AnnIndexError, AnnSettings
from imagerec.ann.files import build_lock, describe_file, fsync_removals, new_build_id, sweep
from imagerec.ann.manifest import AnnMetadata, referenced_names, write_manifest
from imagerec.ann.registry import backend
from imagerec.ann.whitening import SUFFIX as WHITENING_SUFFIX
from imagerec.ann.whitening import CovarianceAccumulator, Whitening
from imagerec.config import Config
from imagerec.layout import Layout
from imagerec.progress import ProgressCallback, report
from imagerec.store import Store
from imagerec.vectors import unit_rows

STAGE = "build-ann"


@dataclass
class BuildSummary:
    """What ``build_ann`` made: the manifest path, its metadata, timings and the leftovers it removed."""

    path: Path  # the manifest, output.dir/ann.json
    metadata: AnnMetadata
    elapsed_s: float
    stage_s: dict[str, float] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {"path": str(self.path), "metadata": self.metadata.to_dict(), "elapsed_s": round(self.elapsed_s, 3),
                "stage_s": {k: round(v, 3) for k, v in self.stage_s.items()}, "removed": list(self.removed)}


def build_ann(config: Config, *, progress: ProgressCallback | None = None) -> BuildSummary:
    """Build ``config``'s ANN index from the embeddings of the collection's current model."""
    return build_index(config.output.layout, AnnSettings.from_config(config), progress=progress)


def build_index(layout: Layout, settings: AnnSettings, *, progress: ProgressCallback | None = None) -> BuildSummary:
    """Build the index of ``layout`` with ``settings`` (one build per collection at a time).

    Embeddings are read ``settings.build_chunk`` rows at a time inside one read snapshot (a concurrent
    ``index`` cannot make the metadata lie); one ``build-ann`` progress event per chunk.
    """
    started = time.perf_counter()
    built_at = time.time()  # before the snapshot: conservative for staleness checks
    stage = {"read": 0.0, "train": 0.0, "add": 0.0, "whitening": 0.0, "write": 0.0}
    with Store(layout.db, readonly=True) as store, build_lock(layout):
        previous = referenced_names(layout)
        removed = sweep(layout, keep=previous)  # temporaries and files of a killed build
        with store.read_snapshot():
            builder, whitening, fields = _add_embeddings(store, layout, settings, progress, stage)
        fields.update(built_at=built_at, build_seconds=round(time.perf_counter() - started, 3),
                      built_at_iso=datetime.fromtimestamp(built_at, timezone.utc).isoformat(timespec="seconds"))
        t0 = time.perf_counter()
        meta = _write(layout, builder, whitening, fields, previous)
        removed += sweep(layout, keep={f.name for f in meta.files}, legacy=True)  # the previous index, old versions
        fsync_removals(layout)
        stage["write"] = time.perf_counter() - t0
    return BuildSummary(layout.ann_manifest, meta, time.perf_counter() - started, stage, removed)


def _add_embeddings(store: Store, layout: Layout, settings: AnnSettings, progress: ProgressCallback | None,
                    stage: dict[str, float]) -> tuple[AnnBackend, Whitening | None, dict[str, Any]]:
    """A backend (``kind: auto`` resolved for this collection) fed the current model's embeddings (trained first when
    it needs it), the whitening fitted on them (None: off or too few), and the manifest fields that describe the source."""
    model_id = store.model_id
    total = store.count_embeddings_by_model().get(model_id, 0) if model_id else 0
    if not model_id or total == 0:
        raise _nothing_to_index(layout)
    data_version = store.data_version
    dim = int(next(store.iter_embeddings(model_id, chunk_size=1))[1].shape[1])
    chosen = settings.for_collection(total, dim)
    builder = backend(chosen.kind)(chosen)
    if builder.needs_training:
        t0 = time.perf_counter()
        builder.train(training_sample(store, model_id, builder.training_size(total), total, settings.build_chunk), total)
        stage["train"] = time.perf_counter() - t0
    chunks = store.iter_embeddings(model_id, chunk_size=settings.build_chunk)
    statistics = CovarianceAccumulator(dim, total)
    dim, count, max_id = _feed(builder, chunks, statistics, model_id=model_id, total=total, progress=progress, stage=stage)
    if count == 0:
        raise _nothing_to_index(layout)
    t0 = time.perf_counter()
    wanted = settings.whitening
    whitening = statistics.whitening(wanted.dims, wanted.power) if wanted is not None else None
    stage["whitening"] += time.perf_counter() - t0
    return builder, whitening, dict(kind=builder.kind, model_id=model_id, dim=dim, count=count, max_image_id=max_id,
                         data_version=data_version, params=builder.build_params(), library=builder.library,
                         library_version=builder.library_version(), metric=builder.metric)


def training_sample(store: Store, model_id: str, size: int, total: int, chunk: int) -> np.ndarray:
    """About ``size`` unit embeddings spread evenly over the collection, read in chunks (never all at once)."""
    step, picked, seen = max(1, total // max(1, size)), [], 0
    for _, vectors in store.iter_embeddings(model_id, chunk_size=chunk):
        rows = np.arange(seen, seen + len(vectors))
        picked.append(unit_rows(vectors[rows % step == 0]))
        seen += len(vectors)
    return np.concatenate(picked)[:size] if picked else np.zeros((0, 0), np.float32)


def _feed(builder: AnnBackend, chunks, statistics: CovarianceAccumulator, *, model_id: str, total: int,
          progress: ProgressCallback | None, stage: dict[str, float]) -> tuple[int, int, int]:
    """Unit-normalise and add every chunk, and feed it to the whitening ``statistics``: (dim, count, max id)."""
    dim, count, max_id = 0, 0, 0
    t0 = time.perf_counter()
    for ids, vectors in chunks:
        vectors = unit_rows(vectors)
        stage["read"] += time.perf_counter() - t0
        if not len(ids):
            continue
        if not dim:
            dim = int(vectors.shape[1])
        elif vectors.shape[1] != dim:
            raise AnnIndexError(f"embeddings of model {model_id} have mixed dimensions ({dim} and {vectors.shape[1]}); re-run 'index'")
        t1 = time.perf_counter()
        builder.add(ids, vectors)
        t2 = time.perf_counter()
        statistics.add(vectors)
        stage["add"] += t2 - t1
        stage["whitening"] += time.perf_counter() - t2
        count += len(ids)
        max_id = max(max_id, int(ids.max()))
        report(progress, STAGE, count, total)
        t0 = time.perf_counter()
    return dim, count, max_id


def _write(layout: Layout, builder: AnnBackend, whitening: Whitening | None, fields: dict[str, Any],
           previous: set[str]) -> AnnMetadata:
    """Index files under build-unique names, then the manifest (the commit point); on failure undo ours."""
    build_id = new_build_id(fields["built_at"])
    try:
        paths = builder.write(layout.ann_file(f"ann_{builder.kind}.{build_id}"))
        entry = None
        if whitening is not None:
            paths.append(whitening.write(layout.ann_file(f"ann_whitening.{build_id}{WHITENING_SUFFIX}")))
            entry = {"file": paths[-1].name, "dims": whitening.dims, "power": whitening.power, "rows": whitening.rows}
        meta = AnnMetadata(files=tuple(describe_file(p) for p in paths), whitening=entry, **fields)
        write_manifest(layout, meta)
        return meta
    except BaseException as exc:
        sweep(layout, keep=previous | referenced_names(layout))  # whatever ann.json names now stays
        if isinstance(exc, (OSError, RuntimeError)):  # disk full, permissions; FAISS wraps write errors in RuntimeError
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else (str(exc).splitlines() or [""])[0][:160]
            raise AnnIndexError(f"{layout.root}: cannot write the ANN index ({detail}); the previous index is unchanged") from None
        raise


def _nothing_to_index(layout: Layout) -> AnnIndexError:
    return AnnIndexError(f"{layout.db}: no embeddings to index yet; run 'index' with a model file at {layout.model} first")
