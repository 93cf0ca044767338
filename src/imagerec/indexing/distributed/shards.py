"""Parquet shards: what a distributed index run computed for each file, and the interchange format of ``ingest``.

One row per file: a key (hash of path, size and mtime, which the resume anti-join compares), the path
(raw bytes, relative to the image root), size, mtime, image size and format, the histogram and the
embedding (little-endian float32 bytes), the dHash, the model and histogram they were made with, and
for a broken file its skip reason, detail and load settings instead of features. Parquet writes its
footer last, so a shard whose footer reads is complete; one that does not was left by a killed job.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from imagerec.data.scan import ScannedFile
from imagerec.errors import ImageLoadError, ImagerecError
from imagerec.indexing.decode import Decoded
from imagerec.indexing.plan import WorkItem

SCHEMA = pa.schema([
    ("key", pa.binary()), ("path", pa.binary()), ("size", pa.int64()), ("mtime_ns", pa.int64()),
    ("width", pa.int32()), ("height", pa.int32()), ("format", pa.string()),
    ("histogram", pa.binary()), ("dhash", pa.int64()), ("embedding", pa.binary()),
    ("model_id", pa.string()), ("model_init", pa.string()), ("histogram_key", pa.string()),
    ("skip_reason", pa.string()), ("skip_detail", pa.string()), ("skip_key", pa.string()),
])
META_COLUMNS = ("model_id", "model_init", "histogram_key", "skip_key")
PIXELS = "pixels"  # the model input ((S, S, 3) uint8 as bytes), carried from decode to the embedding actors, never written


class ShardError(ImagerecError):
    """A shard file cannot be read or does not belong to this collection."""


@dataclass(frozen=True, slots=True)
class ShardMeta:
    """What every row of a shard was computed with (a difference means: not interchangeable)."""

    model_id: str | None
    model_init: str | None
    histogram_key: str
    skip_key: str


def file_key(path: bytes, size: int, mtime_ns: int) -> bytes:
    """16 bytes naming one version of one file: equal keys, same file unchanged."""
    return hashlib.blake2b(b"%d:%d:" % (size, mtime_ns) + path, digest_size=16).digest()


def decoded_table(results: Sequence[Decoded], keys: Sequence[bytes], meta: ShardMeta, with_pixels: bool) -> pa.Table:
    """Shard rows of ``results`` (features or skip reason; no embedding yet), plus the model input as raw bytes
    in a ``PIXELS`` column when ``with_pixels`` (an embedding step follows)."""
    files = [d.item.file for d in results]
    errors = [d.error for d in results]
    n = len(results)
    columns = {
        "key": keys, "path": [f.rel_path for f in files], "size": [f.size for f in files],
        "mtime_ns": [f.mtime_ns for f in files], "width": [d.width for d in results],
        "height": [d.height for d in results], "format": [d.format or None for d in results],
        "histogram": [None if d.histogram is None else d.histogram.astype("<f4").tobytes() for d in results],
        "dhash": [d.dhash for d in results], "embedding": [None] * n,
        **{name: [getattr(meta, name)] * n for name in META_COLUMNS},
        "skip_reason": [e.reason if e else None for e in errors], "skip_detail": [e.detail if e else None for e in errors],
    }
    table = pa.Table.from_pydict(columns, schema=SCHEMA)
    if with_pixels:
        pixels = [None if d.pixels is None else np.ascontiguousarray(d.pixels, np.uint8).tobytes() for d in results]
        table = table.append_column(PIXELS, pa.array(pixels, pa.binary()))
    return table


def with_embeddings(table: pa.Table, vectors: Sequence[bytes | None]) -> pa.Table:
    """``decoded_table`` rows with their embeddings (float32 bytes, None for a skipped file), without the pixels."""
    table = table.drop_columns([PIXELS]) if PIXELS in table.column_names else table
    return table.set_column(SCHEMA.get_field_index("embedding"), "embedding", pa.array(vectors, pa.binary()))


def list_shards(paths: Sequence[Path]) -> list[Path]:
    """The ``.parquet`` files named in ``paths`` or under the folders among them, sorted; a missing path is a ``ShardError``."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*.parquet") if p.is_file()))
        elif path.is_file():
            found.append(path)
        else:
            raise ShardError(f"{path}: no such shard file or folder")
    return found


def read_meta(path: Path) -> tuple[int, ShardMeta | None]:
    """Row count and ``ShardMeta`` of a shard (None when empty); a damaged or foreign file is a ``ShardError``."""
    try:
        file = pq.ParquetFile(path)
        if not file.schema_arrow.equals(SCHEMA):
            raise ShardError(f"{path}: not an imagerec shard (its columns differ); shards come from 'index --executor ray'")
        table = file.read(columns=list(META_COLUMNS))
    except (OSError, pa.ArrowException) as exc:
        raise ShardError(f"{path}: damaged shard ({exc}); delete it and re-run 'index --executor ray' to recompute "
                         "its files".replace("\n", " ")) from None
    if table.num_rows == 0:
        return 0, None
    metas = {tuple(row.values()) for row in table.group_by(list(META_COLUMNS)).aggregate([]).to_pylist()}
    if len(metas) > 1:
        raise ShardError(f"{path}: rows made with different models or settings; ingest them from separate runs")
    return table.num_rows, ShardMeta(*metas.pop())


def shard_keys(paths: Sequence[Path]) -> pa.ChunkedArray:
    """The keys of every row of ``paths`` (one column read; what the resume anti-join needs)."""
    chunks = [pq.read_table(p, columns=["key"]).column("key") for p in paths]
    return pa.chunked_array([c for chunked in chunks for c in chunked.chunks], type=pa.binary())


def iter_batches(path: Path, batch_size: int, keep: pa.Array | None = None
                 ) -> Iterator[tuple[list[Decoded], list[Decoded], np.ndarray | None]]:
    """(batch, good, vectors) for ``IndexWriter.write``, ``batch_size`` rows at a time; only keys in ``keep`` if given."""
    for record_batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size):
        if keep is not None:
            record_batch = record_batch.filter(pc.is_in(record_batch.column("key"), value_set=keep))
        if record_batch.num_rows:
            yield _to_decoded(record_batch.to_pydict(), path)


def _to_decoded(rows: dict[str, list], path: Path) -> tuple[list[Decoded], list[Decoded], np.ndarray | None]:
    batch, good, vectors = [], [], []
    for i, rel_path in enumerate(rows["path"]):
        item = WorkItem(ScannedFile(rel_path, rows["size"][i], rows["mtime_ns"][i], ""), None, embedding_only=False)
        if rows["skip_reason"][i] is not None:
            batch.append(Decoded(item, error=ImageLoadError(rows["skip_reason"][i], rows["skip_detail"][i] or "")))
            continue
        if rows["histogram"][i] is None or (rows["model_id"][i] is not None) != (rows["embedding"][i] is not None):
            raise ShardError(f"{path}: row of {rel_path!r} has neither features nor a skip reason; delete the shard and re-run")
        decoded = Decoded(item, rows["width"][i], rows["height"][i], rows["format"][i] or "",
                          np.frombuffer(rows["histogram"][i], "<f4"), rows["dhash"][i])
        batch.append(decoded)
        good.append(decoded)
        if rows["embedding"][i] is not None:
            vectors.append(np.frombuffer(rows["embedding"][i], "<f4"))
    return batch, good, (np.stack(vectors) if vectors else None)
