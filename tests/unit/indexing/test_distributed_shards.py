"""Manifest chunks, the resume anti-join and the shard round trip, on real decoded images (no Ray)."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from imagerec.data import loading
from imagerec.data.features import HistogramSpec
from imagerec.data.scan import scan_images
from imagerec.embed.base import Preprocess
from imagerec.indexing.decode import DecodeSettings, decode_one
from imagerec.indexing.distributed.manifest import count_rows, manifest_keys, pending, write_manifest
from imagerec.indexing.distributed.ray_pipeline import _job_error
from imagerec.indexing.distributed.shards import (PIXELS, SCHEMA, ShardError, ShardMeta, decoded_table, file_key,
                                                  iter_batches, read_meta, shard_keys, with_embeddings)
from imagerec.indexing.plan import WorkItem

META = ShardMeta("model-1", "imagenet", "rgb8", "formats=JPEG")


@pytest.fixture
def folder(tmp_path, make_image):
    root = tmp_path / "images"
    for i in range(7):
        make_image(root / f"d{i % 2}" / f"{i}.png", size=(40, 30), seed=i)
    (root / "d0" / "broken.png").write_bytes(b"not a png at all" * 10)
    return root


def items(root):
    return [WorkItem(f, None, False) for f in scan_images(root)]


def decode_settings(root) -> DecodeSettings:
    return DecodeSettings(os.fsencode(root), loading.LoadSettings(("PNG",), 10**8, 32), HistogramSpec("rgb", 8), Preprocess(32))


def test_manifest_is_written_in_chunks_and_the_anti_join_leaves_only_files_without_shards(folder, tmp_path):
    work = items(folder)
    parts = write_manifest(iter(work), tmp_path / "manifest", chunk_rows=3)
    assert [count_rows([p]) for p in parts] == [3, 3, 2]
    keys = {file_key(w.file.rel_path, w.file.size, w.file.mtime_ns) for w in work}
    assert set(manifest_keys(parts).to_pylist()) == keys

    done = pa.chunked_array([pa.array([file_key(w.file.rel_path, w.file.size, w.file.mtime_ns) for w in work[:4]])])
    todo, rows = pending(parts, done, tmp_path / "todo")
    assert rows == 4 and count_rows(todo) == 4
    left = {r for p in todo for r in pq.read_table(p).column("path").to_pylist()}
    assert left == {w.file.rel_path for w in work[4:]}
    assert pending(parts, pa.chunked_array([], pa.binary()), tmp_path / "todo")[1] == len(work)


def test_a_changed_file_has_another_key():
    assert file_key(b"a.jpg", 10, 5) != file_key(b"a.jpg", 10, 6) != file_key(b"a.jpg", 11, 5)
    assert file_key(b"a.jpg", 10, 5) == file_key(b"a.jpg", 10, 5)


def test_shard_rows_round_trip_to_what_the_writer_gets(folder, tmp_path):
    work = items(folder)
    settings = decode_settings(folder)
    results = [decode_one(w, settings) for w in work]
    keys = [file_key(w.file.rel_path, w.file.size, w.file.mtime_ns) for w in work]
    table = decoded_table(results, keys, META, with_pixels=True)
    assert table.column(PIXELS).null_count == 1  # the broken file has no model input
    vectors = [None if d.error else np.full(4, i, "<f4").tobytes() for i, d in enumerate(results)]
    shard = tmp_path / "shard.parquet"
    pq.write_table(with_embeddings(table, vectors), shard)

    assert read_meta(shard) == (len(work), META)
    assert sorted(shard_keys([shard]).to_pylist()) == sorted(keys)
    (batch, good, embedded), = list(iter_batches(shard, batch_size=100))
    assert [d.item.file.rel_path for d in batch] == [w.file.rel_path for w in work]
    broken = [d for d in batch if d.error is not None]
    assert len(broken) == 1 and broken[0].error.reason == results[[d.error is not None for d in results].index(True)].error.reason
    originals = [d for d in results if d.error is None]
    for got, want in zip(good, originals):
        assert (got.width, got.height, got.format, got.dhash) == (want.width, want.height, want.format, want.dhash)
        np.testing.assert_array_equal(got.histogram, want.histogram)
    assert embedded.shape == (len(good), 4)

    keep = pa.array(keys[:2], pa.binary())
    assert sum(len(b) for b, _, _ in iter_batches(shard, 100, keep)) == 2


def test_damaged_or_foreign_shards_are_named(tmp_path):
    damaged = tmp_path / "damaged.parquet"
    damaged.write_bytes(b"PAR1" + b"\0" * 100)
    with pytest.raises(ShardError, match="damaged.parquet: damaged shard"):
        read_meta(damaged)
    foreign = tmp_path / "foreign.parquet"
    pq.write_table(pa.table({"x": [1]}), foreign)
    with pytest.raises(ShardError, match="not an imagerec shard"):
        read_meta(foreign)
    empty = tmp_path / "empty.parquet"
    pq.write_table(SCHEMA.empty_table(), empty)
    assert read_meta(empty) == (0, None)


def test_a_failed_ray_job_is_one_line_naming_the_first_error():
    report = ("ray.exceptions.UserCodeException: UDF failed\nTraceback...\n"
              "pyarrow.lib.ArrowTypeError: Expected bytes, got float32\n"
              "The above exception was the direct cause of the following exception:\n"
              "ray.exceptions.UserCodeException: UDF failed to process a data block.")
    message = str(_job_error(RuntimeError(report)))
    assert message.startswith("the Ray job failed (ArrowTypeError: Expected bytes, got float32)") and "\n" not in message
    wrapped = "ray.exceptions.RayTaskError: ...\nimagerec.errors.ImagerecError: a Ray actor loaded model x\n"
    assert str(_job_error(RuntimeError(wrapped))) == "a Ray actor loaded model x"
