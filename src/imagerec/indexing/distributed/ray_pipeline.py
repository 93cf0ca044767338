"""The Ray Data pipeline of a distributed index run: manifest chunks → decode tasks → embedding actors → shards.

* Decoding runs ``decode_one``, the local executor's function (so features are identical), inside
  ``map_batches`` tasks that read the files themselves: every node must see ``data.image_root`` and
  ``output.dir`` at the same paths (a shared file system). A broken file becomes a row with its skip
  reason, never a failed block: Ray Data fails the whole job on the first failed block.
* The model is loaded once per actor of an ``ActorPoolStrategy`` pool: one actor per GPU with
  ``num_gpus=1`` when the cluster has GPUs, else CPU actors reserving a fraction of a CPU each. An
  actor at a whole CPU on a 2-core instance can starve the read/decode tasks for good (measured: two
  such actors on ``num_cpus=2`` deadlock); 0.5 CPU each always leaves room for a decode task.
* Shards are written by the workers straight into ``output.dir``; nothing funnels through the driver.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imagerec.data.scan import ScannedFile
from imagerec.embed.choice import ModelChoice
from imagerec.errors import ImagerecError
from imagerec.indexing.decode import DecodeSettings, decode_one
from imagerec.indexing.distributed.shards import PIXELS, ShardMeta, decoded_table, with_embeddings
from imagerec.indexing.plan import WorkItem

_RAISED = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception)): (.*)$", re.MULTILINE)  # "module.SomeError: message"
DECODE_BATCH = 32  # files per decode call (the local executor's job size)
MAX_BLOCKS = 4096  # input blocks of (file, row group) items: at 100M files, ~24 row groups per block


@dataclass(frozen=True, slots=True)
class RaySettings:
    """Where the cluster is and how the pipeline reserves its resources (``index.ray`` in the config)."""

    address: str | None  # None: start a local instance
    embed_actors: int | None  # None: one per GPU, else 1
    actor_cpus: float
    decode_cpus: float
    chunk_rows: int
    keep_shards: bool
    show_progress: bool = True


@dataclass(frozen=True, slots=True)
class EmbedSpec:
    """How an actor loads the driver's model, and the model id it must then have."""

    choice: ModelChoice
    device: str
    threads: int | None
    model_id: str


def connect(address: str | None):
    """The ``ray`` module, initialised: connected to ``address``, or a local instance when None (reused if already up)."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # its INFO lines would bury the summary
    return ray


def run_pipeline(todo: list[tuple[str, int]], shard_dir: Path, decode: DecodeSettings, meta: ShardMeta, embed: EmbedSpec | None,
                 settings: RaySettings, batch_size: int) -> None:
    """Decode and embed the files of the manifest row groups ``todo`` (file, group) on the cluster into ``shard_dir``."""
    ray = connect(settings.address)
    ray.data.DataContext.get_current().enable_progress_bars = settings.show_progress
    # Decode tasks read their manifest row groups themselves: no file listing or footer pass in the driver (Ray Data's
    # parquet reader lists from threads that race on importing fsspec's http module when aiohttp is absent).
    ds = ray.data.from_items([{"chunk": path, "group": group} for path, group in todo],
                             override_num_blocks=min(len(todo), MAX_BLOCKS))
    gpus = int(ray.cluster_resources().get("GPU", 0))
    ds = ds.map_batches(decode_chunks, fn_kwargs={"settings": decode, "meta": meta, "with_pixels": embed is not None,
                                                  "yield_cpu": embed is not None and not gpus},
                        batch_size=1, batch_format="pyarrow", num_cpus=settings.decode_cpus)
    if embed is not None:
        actors = settings.embed_actors or max(1, gpus)
        resources = {"num_gpus": 1} if gpus else {"num_cpus": settings.actor_cpus}
        ds = ds.map_batches(EmbedActor, fn_constructor_kwargs={"spec": embed, "gpu": bool(gpus)},
                            batch_size=batch_size, batch_format="pyarrow",
                            compute=ray.data.ActorPoolStrategy(size=actors), **resources)
    shard_dir.mkdir(parents=True, exist_ok=True)
    try:
        ds.write_parquet(str(shard_dir))
    except ray.exceptions.RayError as exc:
        raise _job_error(exc) from None


def decode_chunks(batch, settings: DecodeSettings, meta: ShardMeta, with_pixels: bool, yield_cpu: bool):
    """Decode task: the files of each manifest row group named in ``batch``, ``DECODE_BATCH`` at a time, as shard
    columns (plus the model input when an embedding step follows). With ``yield_cpu`` (a CPU model shares the
    cores) it decodes in the cycles the model leaves idle, as the local executor's workers do."""
    import pyarrow.parquet as pq

    if yield_cpu and hasattr(os, "SCHED_IDLE"):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))

    for chunk, group in zip(batch.column("chunk").to_pylist(), batch.column("group").to_pylist()):
        for rows in pq.ParquetFile(chunk).read_row_group(group).to_batches(max_chunksize=DECODE_BATCH):
            yield decode_rows(rows.to_pydict(), settings, meta, with_pixels)


def decode_rows(rows: dict[str, list], settings: DecodeSettings, meta: ShardMeta, with_pixels: bool):
    """Manifest rows → ``decode_one`` per file (it turns every per-file failure into a result) → columns."""
    results = [decode_one(WorkItem(ScannedFile(path, size, mtime_ns, hint), None, embedding_only=False), settings)
               for path, size, mtime_ns, hint in zip(rows["path"], rows["size"], rows["mtime_ns"], rows["format_hint"])]
    return decoded_table(results, rows["key"], meta, with_pixels)


class EmbedActor:
    """Embedding actor: loads the model once, then embeds every batch's decoded rows and emits shard rows."""

    def __init__(self, spec: EmbedSpec, gpu: bool):
        from imagerec.embed import load_chosen_embedder, set_torch_threads

        self.embedder = load_chosen_embedder(spec.choice, device="cuda" if gpu else spec.device, threads=spec.threads)
        found = self.embedder.model_id if self.embedder is not None else None
        if found != spec.model_id:
            raise ImagerecError(f"a Ray actor loaded model {found}, but this run embeds with {spec.model_id}: every node "
                                f"must see the same {spec.choice.model_path}")
        if self.embedder.runs_on_cpu:
            set_torch_threads(spec.threads)

    def __call__(self, batch):
        pixels = batch.column(PIXELS).to_pylist()
        good = [row for row, data in enumerate(pixels) if data is not None]
        vectors: list[bytes | None] = [None] * batch.num_rows
        if good:
            size = self.embedder.input_size
            stacked = np.frombuffer(b"".join(pixels[row] for row in good), np.uint8).reshape(len(good), size, size, 3)
            for row, vector in zip(good, self.embedder.embed(stacked)):
                vectors[row] = np.asarray(vector, "<f4").tobytes()
        return with_embeddings(batch, vectors)


def _job_error(exc: Exception) -> ImagerecError:
    """A failed Ray job as one line: the first-raised exception in its report (an ``ImagerecError`` comes back as it was)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, ImagerecError):
        return cause
    raised = [m for m in _RAISED.finditer(str(exc)) if not m.group(1).startswith("ray.")]
    if raised and raised[0].group(1).endswith("ImagerecError"):
        return ImagerecError(raised[0].group(2).strip())
    reason = f"{raised[0].group(1).rsplit('.', 1)[-1]}: {raised[0].group(2).strip()}" if raised else type(exc).__name__
    return ImagerecError(f"the Ray job failed ({reason}); finished shards are kept: run 'index --executor ray' again "
                         "to continue")
