"""The manifest: the files a distributed run must process, written as Parquet chunks while the scan streams.

The driver never holds the file list: ``write_manifest`` pulls the planned files and writes every
``chunk_rows`` of them as one file, in row groups of ``ROW_GROUP`` rows. A row group is the unit of
work handed to Ray (a decode task reads it itself, instead of ``ray.data.read_images`` on a path
list, whose metadata pass takes hours at 100M paths). ``pending`` is the resume anti-join: manifest
rows whose key has no shard row yet.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from imagerec.indexing.distributed.shards import file_key
from imagerec.indexing.plan import WorkItem, batched

ROW_GROUP = 1024  # manifest rows per Parquet row group: one decode task's work, so even one chunk spreads over the cluster
SCHEMA = pa.schema([("key", pa.binary()), ("path", pa.binary()), ("size", pa.int64()), ("mtime_ns", pa.int64()),
                    ("format_hint", pa.string())])


def write_manifest(items: Iterable[WorkItem], folder: Path, chunk_rows: int) -> list[Path]:
    """Write the files of ``items`` into ``folder`` (emptied first), ``chunk_rows`` per Parquet file; returns the files."""
    _fresh(folder)
    parts = []
    for number, chunk in enumerate(batched(items, chunk_rows)):
        files = [item.file for item in chunk]
        table = pa.table({
            "key": [file_key(f.rel_path, f.size, f.mtime_ns) for f in files], "path": [f.rel_path for f in files],
            "size": [f.size for f in files], "mtime_ns": [f.mtime_ns for f in files],
            "format_hint": [f.format_hint for f in files],
        }, schema=SCHEMA)
        parts.append(_write(table, folder / f"part-{number:06d}.parquet"))
    return parts


def pending(parts: Sequence[Path], done: pa.ChunkedArray, folder: Path) -> tuple[list[Path], int]:
    """Rows of ``parts`` whose key is not in ``done``, written into ``folder`` (emptied first); the files and the row count."""
    _fresh(folder)
    done_keys = done.combine_chunks() if done.num_chunks else pa.array([], pa.binary())
    todo, rows = [], 0
    for part in parts:
        table = pq.read_table(part)
        left = table.filter(pc.invert(pc.is_in(table.column("key"), value_set=done_keys)))
        if left.num_rows:
            todo.append(_write(left, folder / part.name))
            rows += left.num_rows
    return todo, rows


def manifest_keys(parts: Sequence[Path]) -> pa.Array:
    """Every key of the manifest (which shard rows belong to this run)."""
    columns = [pq.read_table(p, columns=["key"]).column("key") for p in parts]
    return pa.chunked_array([c for col in columns for c in col.chunks], type=pa.binary()).combine_chunks()


def row_groups(parts: Sequence[Path]) -> list[tuple[str, int]]:
    """(file, row group) of every row group of the manifest files ``parts``: the units of work handed to Ray."""
    return [(str(p), group) for p in parts for group in range(pq.read_metadata(p).num_row_groups)]


def count_rows(parts: Sequence[Path]) -> int:
    """Rows in the manifest files ``parts`` (from their footers)."""
    return sum(pq.read_metadata(p).num_rows for p in parts)


def _fresh(folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)


def _write(table: pa.Table, path: Path) -> Path:
    pq.write_table(table, path, row_group_size=ROW_GROUP)
    return path
