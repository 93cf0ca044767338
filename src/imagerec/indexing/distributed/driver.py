"""A distributed ``index`` run, driven from here: plan → manifest → Ray (only what has no shard yet) → ingest.

The driver scans and plans exactly as the local ``index`` does (unchanged and skipped-known files
need no work), streams the files that do into the manifest, subtracts the files that already have
a shard (the anti-join that makes a re-run after a killed or failed job resume instead of
recompute), runs the Ray pipeline on the rest, and ingests the shard rows that belong to this
manifest. Shards live in ``output.dir/distributed/<run key>/``; the key changes with the model, the
histogram and the load settings, so shards made under other settings are never ingested by mistake.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from imagerec.config import Config
from imagerec.embed.base import Embedder
from imagerec.embed.choice import ModelChoice
from imagerec.indexing.distributed.ray_pipeline import EmbedSpec, RaySettings
from imagerec.indexing.summary import IndexProgress, IndexSummary
from imagerec.progress import ProgressCallback
from imagerec.store import Store

WORK_DIR = "distributed"  # under output.dir


@dataclass(frozen=True, slots=True)
class DistributedSettings:
    """What a distributed run needs beyond ``IndexSettings``: the cluster, the model for the actors, the work folder."""

    ray: RaySettings
    embed: EmbedSpec | None
    work_dir: Path

    @classmethod
    def from_config(cls, config: Config, embedder: Embedder | None, show_progress: bool = True) -> "DistributedSettings":
        r = config.index.ray
        ray = RaySettings(r.address, r.embed_actors, r.actor_cpus, r.decode_cpus, r.chunk_rows, r.keep_shards, show_progress)
        embed = None if embedder is None else EmbedSpec(ModelChoice.from_config(config), config.runtime.device,
                                                        config.runtime.threads, embedder.model_id)
        return cls(ray, embed, config.output.dir / WORK_DIR)


def index_distributed(settings, distributed: DistributedSettings, db: Path, embedder: Embedder | None,
                      progress: ProgressCallback | None) -> IndexSummary:
    """``run_index`` with decode and embedding on Ray (``settings`` an ``IndexSettings``); returns what was done."""
    from imagerec.indexing.distributed.manifest import write_manifest
    from imagerec.indexing.distributed.shards import ShardMeta
    from imagerec.indexing.run import begin_run, new_summary, plan_work, remove_gone

    started = time.perf_counter()
    summary, tracker = new_summary(settings, embedder, progress)
    meta = ShardMeta(summary.model_id, embedder.init if embedder else None, settings.decode.histogram.key,
                     settings.decode.load.skip_key)
    folder = distributed.work_dir / run_key(meta, settings.decode.preprocess)
    with Store(db) as store:
        stored_before = begin_run(store, embedder)
        parts = write_manifest(plan_work(store, settings, summary, tracker), folder / "manifest",
                               distributed.ray.chunk_rows)
        try:
            _compute(parts, folder, settings, distributed, meta)
            _ingest(parts, folder, store, settings, summary, tracker)
        except KeyboardInterrupt:
            summary.interrupted = True  # shards and committed batches are kept: a re-run continues
        if not summary.interrupted:
            remove_gone(store, settings, summary, stored_before)
    if not summary.interrupted and not distributed.ray.keep_shards:
        shutil.rmtree(folder, ignore_errors=True)
        with suppress(OSError):
            folder.parent.rmdir()  # only when no other run's shards are left in it
    summary.elapsed_s = time.perf_counter() - started
    return summary


def run_key(meta, preprocess) -> str:
    """A short name for what the shards depend on: model, model input size, histogram and load settings."""
    text = f"{meta.model_id}|{preprocess}|{meta.histogram_key}|{meta.skip_key}"
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def finished_shards(shard_dir: Path) -> list[Path]:
    """The complete shards in ``shard_dir``; a damaged one (left by a killed job) is deleted: its files are redone."""
    from imagerec.indexing.distributed.shards import ShardError, read_meta

    done = []
    for shard in sorted(shard_dir.glob("*.parquet")) if shard_dir.is_dir() else []:
        try:
            read_meta(shard)
            done.append(shard)
        except ShardError:
            shard.unlink()
    return done


def _compute(parts: list[Path], folder: Path, settings, distributed: DistributedSettings, meta) -> None:
    """Run Ray on the manifest rows that have no finished shard row yet (none: Ray is not even started)."""
    from imagerec.indexing.distributed.manifest import pending, row_groups
    from imagerec.indexing.distributed.ray_pipeline import run_pipeline
    from imagerec.indexing.distributed.shards import shard_keys

    todo, rows = pending(parts, shard_keys(finished_shards(folder / "shards")), folder / "todo")
    if rows:
        run_pipeline(row_groups(todo), folder / "shards", settings.decode, meta, distributed.embed, distributed.ray,
                     settings.batch_size)


def _ingest(parts: list[Path], folder: Path, store: Store, settings, summary: IndexSummary, tracker: IndexProgress) -> None:
    """Upsert the shard rows of this run's manifest (not those of files changed since an earlier run)."""
    from imagerec.indexing.distributed.ingest import write_shards
    from imagerec.indexing.distributed.manifest import manifest_keys
    from imagerec.indexing.run import make_writer

    if not parts:
        return
    writer = make_writer(store, settings, summary, tracker)
    write_shards(finished_shards(folder / "shards"), writer, settings.batch_size, keep=manifest_keys(parts))
