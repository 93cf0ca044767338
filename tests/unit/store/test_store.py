"""SQLite store on real files: schema, ids, skip records, cascades, scans, locking, errors, encodings."""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from imagerec.errors import StoreError
from imagerec.data.features import hash_from_int64, hash_to_int64
from imagerec.store import ImageRecord, SkipRecord, Store, WriteResult
from imagerec.store.migrations import SCHEMA_VERSION
from imagerec.store.records import absolute_path, display_path

DIM = 8


def _record(path: bytes, seed: int = 0, *, size: int = 100, mtime_ns: int = 1, model_id: str | None = "m1", **kw) -> ImageRecord:
    rng = np.random.default_rng(seed)
    hist = rng.random(27).astype(np.float32)
    fields = dict(
        path=path,
        size=size,
        mtime_ns=mtime_ns,
        width=40 + seed,
        height=30 + seed,
        format="JPEG",
        histogram=hist / hist.sum(),
        histogram_key="rgb3x3x3-side128",
        dhash=hash_to_int64(int(rng.integers(0, 1 << 63)) | (1 << 63)),
        embedding=rng.normal(size=DIM).astype(np.float32) if model_id else None,
        model_id=model_id,
    )
    fields.update(kw)
    return ImageRecord(**fields)


def _raw(db_path: Path) -> closing[sqlite3.Connection]:
    """A separate plain connection, to check what is really on disk (closed when the ``with`` ends)."""
    return closing(sqlite3.connect(db_path, isolation_level=None))


def _count(db_path: Path, table: str) -> int:
    with _raw(db_path) as db:
        return db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


@pytest.fixture
def db_path(tmp_path) -> Path:
    return tmp_path / "out" / "images.db"


@pytest.fixture
def store(db_path):
    with Store(db_path) as s:
        yield s


# -- schema -------------------------------------------------------------------------------------


def test_new_database_gets_the_current_schema_and_wal(store, db_path):
    assert db_path.is_file()  # parent folder created
    assert SCHEMA_VERSION == 2
    assert store.schema_version == 2
    with _raw(db_path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == 2
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"images", "embeddings", "skipped", "meta"} <= tables
    assert store.data_version == 0
    assert store.count_images() == 0 and store.max_image_id() == 0
    assert store.integrity_check() == "ok"


def test_reopen_keeps_data_and_does_not_migrate_again(db_path):
    with Store(db_path) as s:
        s.write_batch([_record(b"a.jpg")])
    with Store(db_path) as s:
        assert s.schema_version == 2
        assert s.count_images() == 1
        assert s.data_version == 1


def test_newer_schema_is_refused(db_path):
    Store(db_path).close()
    with _raw(db_path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    for readonly in (False, True):
        with pytest.raises(StoreError) as info:
            Store(db_path, readonly=readonly)
        assert "newer" in str(info.value) and str(db_path) in str(info.value)
    with _raw(db_path) as db:  # left as it was
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1


@pytest.mark.parametrize("content", [b"this is not a database, just some text\n" * 20, bytes(range(256)) * 8])
def test_non_database_file_is_a_store_error(tmp_path, content):
    path = tmp_path / "images.db"
    path.write_bytes(content)
    with pytest.raises(StoreError) as info:
        Store(path)
    message = str(info.value)
    assert str(path) in message and "not a valid imagerec database" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no sqlite3 traceback chained
    assert "Traceback" not in message and "sqlite3." not in message
    assert path.read_bytes() == content  # not overwritten


def test_database_path_is_a_directory(tmp_path):
    (tmp_path / "images.db").mkdir()
    with pytest.raises(StoreError):
        Store(tmp_path / "images.db")


# -- writing ------------------------------------------------------------------------------------


def test_insert_then_update_keeps_id(store):
    assert store.write_batch([_record(b"a.jpg", 1), _record(b"b.jpg", 2)]) == WriteResult(inserted=2, updated=0)
    first = store.lookup([b"a.jpg", b"b.jpg"])
    a_id = first[b"a.jpg"].image_id
    assert first[b"a.jpg"].image_id != first[b"b.jpg"].image_id
    changed = _record(b"a.jpg", 9, size=555, mtime_ns=777, model_id="m2")
    assert store.write_batch([changed]) == WriteResult(inserted=0, updated=1)
    state = store.lookup([b"a.jpg"])[b"a.jpg"]
    assert state.image_id == a_id
    assert (state.size, state.mtime_ns, state.model_id) == (555, 777, "m2")
    assert store.count_images() == 2
    (row,) = store.get_images([a_id], model_id="m2")
    np.testing.assert_array_equal(row.histogram, changed.histogram)
    np.testing.assert_array_equal(row.embedding, changed.embedding)
    assert (row.width, row.height) == (changed.width, changed.height)


def test_update_without_embedding_drops_old_embedding(store, db_path):
    store.write_batch([_record(b"a.jpg")])
    assert store.count_embeddings_by_model() == {"m1": 1}
    store.write_batch([_record(b"a.jpg", 3, model_id=None)])
    assert store.lookup([b"a.jpg"])[b"a.jpg"].model_id is None
    assert _count(db_path, "embeddings") == 0


def test_ids_are_never_reused_after_removal(store):
    store.write_batch([_record(b"a.jpg"), _record(b"b.jpg")])
    ids = {p: s.image_id for p, s in store.lookup([b"a.jpg", b"b.jpg"]).items()}
    # remove the image with the highest id: plain rowids would hand that id out again
    store.begin_scan()
    store.mark_seen([b"a.jpg"])
    assert store.remove_unseen() == 1
    store.write_batch([_record(b"c.jpg")])
    c_id = store.lookup([b"c.jpg"])[b"c.jpg"].image_id
    assert c_id not in ids.values() and c_id > max(ids.values())
    # the same path coming back is a new image with a new id
    store.write_batch([_record(b"b.jpg")])
    assert store.lookup([b"b.jpg"])[b"b.jpg"].image_id > c_id
    assert store.max_image_id() == store.lookup([b"b.jpg"])[b"b.jpg"].image_id


def test_skip_record_replaces_image_row_and_its_embedding(store, db_path):
    store.write_batch([_record(b"a.jpg"), _record(b"b.jpg")])
    a_id = store.find_by_path(b"a.jpg")
    store.write_batch(skips=[SkipRecord(b"a.jpg", 12, 34, "truncated", "image file is truncated")])
    assert store.lookup([b"a.jpg"]) == {}
    assert store.find_by_path(b"a.jpg") is None
    assert store.lookup_skipped([b"a.jpg", b"b.jpg"]) == {b"a.jpg": (12, 34, "")}
    assert store.get_images([a_id], "m1") == []
    with _raw(db_path) as db:
        assert db.execute("SELECT COUNT(*) FROM embeddings WHERE image_id = ?", (a_id,)).fetchone()[0] == 0
    assert store.count_embeddings_by_model() == {"m1": 1}
    assert store.count_skipped_by_reason() == {"truncated": 1}
    assert list(store.iter_skipped()) == [(b"a.jpg", "truncated", "image file is truncated")]


def test_image_row_replaces_skip_record(store):
    store.write_batch(skips=[SkipRecord(b"a.jpg", 1, 2, "corrupt", "bad"), SkipRecord(b"z.jpg", 1, 2, "corrupt", "bad")])
    store.write_batch([_record(b"a.jpg", size=10, mtime_ns=20)])
    assert store.lookup_skipped([b"a.jpg", b"z.jpg"]) == {b"z.jpg": (1, 2, "")}
    assert b"a.jpg" in store.lookup([b"a.jpg"])
    assert store.count_skipped_by_reason() == {"corrupt": 1}


def test_skip_record_is_updated_in_place(store):
    store.write_batch(skips=[SkipRecord(b"a.jpg", 1, 2, "corrupt", "x")])
    store.write_batch(skips=[SkipRecord(b"a.jpg", 3, 4, "truncated", "y")])
    assert store.lookup_skipped([b"a.jpg"]) == {b"a.jpg": (3, 4, "")}
    assert list(store.iter_skipped()) == [(b"a.jpg", "truncated", "y")]


def test_embeddings_for_existing_images(store):
    store.write_batch([_record(b"a.jpg", model_id=None)])
    a_id = store.find_by_path(b"a.jpg")
    vector = np.arange(DIM, dtype=np.float32)
    store.write_batch(embeddings=[(a_id, vector, "m9")])
    assert store.lookup([b"a.jpg"])[b"a.jpg"].model_id == "m9"
    np.testing.assert_array_equal(store.get_images([a_id], "m9")[0].embedding, vector)


def test_embedding_for_missing_image_is_refused(store, db_path):
    with pytest.raises(StoreError):
        store.write_batch(embeddings=[(12345, np.zeros(DIM, np.float32), "m1")])  # foreign key
    assert _count(db_path, "embeddings") == 0


def test_embeddings_cascade_deleted_with_image(store, db_path):
    store.write_batch([_record(b"a.jpg"), _record(b"b.jpg"), _record(b"c.jpg")])
    assert _count(db_path, "embeddings") == 3
    store.begin_scan()
    store.mark_seen([b"b.jpg"])
    assert store.remove_unseen() == 2
    with _raw(db_path) as db:
        rows = db.execute("SELECT e.image_id, i.path FROM embeddings e LEFT JOIN images i ON i.id = e.image_id").fetchall()
    assert len(rows) == 1 and rows[0][1] == b"b.jpg"  # no orphans


def test_scan_tracking_removes_unseen_images_and_skips(store):
    store.write_batch([_record(b"keep.jpg"), _record(b"gone.jpg")], skips=[SkipRecord(b"bad-gone.jpg", 1, 1, "corrupt", "-"), SkipRecord(b"bad-keep.jpg", 1, 1, "corrupt", "-")])
    store.begin_scan()
    store.mark_seen([b"keep.jpg"])
    store.mark_seen([b"bad-keep.jpg", b"keep.jpg", b"new-file.jpg"])  # repeated and unknown paths are fine
    assert store.remove_unseen() == 1
    assert set(store.lookup([b"keep.jpg", b"gone.jpg"])) == {b"keep.jpg"}
    assert set(store.lookup_skipped([b"bad-gone.jpg", b"bad-keep.jpg"])) == {b"bad-keep.jpg"}
    # a new scan starts from nothing seen
    store.begin_scan()
    store.mark_seen([])
    assert store.remove_unseen() == 1
    assert store.count_images() == 0


def test_lookup_of_nothing_and_of_unknown_paths(store):
    store.write_batch([_record(b"a.jpg")])
    assert store.lookup([]) == {} and store.lookup_skipped([]) == {}
    assert store.lookup([b"nope.jpg"]) == {}
    assert store.lookup_skipped([b"a.jpg"]) == {}
    state = store.lookup([b"a.jpg", b"nope.jpg"])[b"a.jpg"]
    assert (state.size, state.mtime_ns, state.histogram_key, state.model_id) == (100, 1, "rgb3x3x3-side128", "m1")


def test_data_version_increments_per_committed_write(store):
    assert store.data_version == 0
    store.write_batch([_record(b"a.jpg"), _record(b"b.jpg")])  # one batch, one increment
    assert store.data_version == 1
    store.write_batch([_record(b"a.jpg", 5)])
    assert store.data_version == 2
    store.write_batch(embeddings=[(store.find_by_path(b"a.jpg"), np.ones(DIM, np.float32), "m2")])
    assert store.data_version == 3
    store.write_batch(skips=[SkipRecord(b"x.jpg", 1, 1, "corrupt", "-")])
    assert store.data_version == 4
    assert store.write_batch() == WriteResult(0, 0)  # nothing written, nothing changed
    assert store.data_version == 4
    store.begin_scan()
    store.mark_seen([b"a.jpg", b"b.jpg", b"x.jpg"])
    assert store.remove_unseen() == 0
    assert store.data_version == 4
    store.begin_scan()
    store.mark_seen([b"a.jpg"])
    assert store.remove_unseen() == 1
    assert store.data_version == 5
    store.set_meta("note", "hello")
    assert store.get_meta("note") == "hello" and store.get_meta("missing") is None
    assert store.data_version == 5


def test_data_version_is_seen_by_another_connection(db_path):
    with Store(db_path) as writer, Store(db_path) as reader:
        writer.write_batch([_record(b"a.jpg")])
        assert reader.data_version == 1


# -- reading ------------------------------------------------------------------------------------


def test_iter_embeddings_in_chunks(store):
    records = [_record(f"{i:02d}.jpg".encode(), i, model_id="m1" if i % 3 else "m2") for i in range(11)]
    store.write_batch(records)
    by_path = {r.path: r for r in records}
    ids = store.lookup([r.path for r in records])
    expected = sorted((ids[r.path].image_id, r.path) for r in records if r.model_id == "m1")
    chunks = list(store.iter_embeddings("m1", chunk_size=3))
    assert len(expected) == 7  # i % 3 != 0 for i in 0..10: 1 2 4 5 7 8 10
    assert [len(c[0]) for c in chunks] == [3, 3, 1]
    all_ids = np.concatenate([c[0] for c in chunks])
    assert all_ids.dtype == np.int64
    assert all_ids.tolist() == [i for i, _ in expected]  # ascending id order, no duplicates
    vectors = np.concatenate([c[1] for c in chunks])
    assert vectors.dtype == np.float32 and vectors.shape == (len(expected), DIM)
    for (image_id, path), vector in zip(expected, vectors):
        np.testing.assert_array_equal(vector, by_path[path].embedding)
    # resume after an id
    after = expected[1][0]
    assert np.concatenate([c[0] for c in store.iter_embeddings("m1", 100, after_id=after)]).tolist() == [i for i, _ in expected[2:]]
    assert list(store.iter_embeddings("no-such-model")) == []


def test_iter_embeddings_chunk_boundaries(store):
    store.write_batch([_record(f"{i}.jpg".encode(), i) for i in range(4)])
    assert [len(ids) for ids, _ in store.iter_embeddings("m1", chunk_size=2)] == [2, 2]
    assert [len(ids) for ids, _ in store.iter_embeddings("m1", chunk_size=3)] == [3, 1]
    assert [len(ids) for ids, _ in store.iter_embeddings("m1", chunk_size=1)] == [1, 1, 1, 1]


def test_get_images(store):
    records = [_record(b"a.jpg", 1), _record(b"b.jpg", 2, model_id="m2"), _record(b"c.jpg", 3, model_id=None)]
    store.write_batch(records)
    ids = {p: s.image_id for p, s in store.lookup([r.path for r in records]).items()}
    rows = {row.path: row for row in store.get_images([*ids.values(), 99999], model_id="m1")}
    assert set(rows) == {b"a.jpg", b"b.jpg", b"c.jpg"}  # the missing id is left out
    for rec in records:
        row = rows[rec.path]
        assert row.id == ids[rec.path]
        assert (row.width, row.height) == (rec.width, rec.height)
        np.testing.assert_array_equal(row.histogram, rec.histogram)
        assert row.histogram.dtype == np.float32
        assert row.dhash == rec.dhash and row.dhash < 0  # signed int64 with the top bit set
        assert hash_from_int64(row.dhash) >= 1 << 63
    np.testing.assert_array_equal(rows[b"a.jpg"].embedding, records[0].embedding)
    assert rows[b"b.jpg"].embedding is None  # an embedding of another model is not returned
    assert rows[b"c.jpg"].embedding is None
    assert all(r.embedding is None for r in store.get_images(list(ids.values())))  # no model asked
    assert store.get_images([]) == []


def test_non_utf8_path_bytes_round_trip(store, tmp_path):
    path = b"dir/caf\xe9-\xff\xfe.jpg"
    with pytest.raises(UnicodeDecodeError):
        path.decode("utf-8")
    store.write_batch([_record(path)], skips=[SkipRecord(b"bad-\x80.png", 1, 1, "corrupt", "x")])
    assert set(store.lookup([path])) == {path}
    image_id = store.find_by_path(path)
    (row,) = store.get_images([image_id])
    assert row.path == path and type(row.path) is bytes
    assert list(store.iter_skipped())[0][0] == b"bad-\x80.png"
    assert display_path(path) == "dir/caf\\xe9-\\xff\\xfe.jpg"
    assert absolute_path(tmp_path, path) == bytes(tmp_path) + b"/" + path


def test_integrity_check_ok_after_writes(store, db_path):
    store.write_batch([_record(f"{i}.jpg".encode(), i) for i in range(20)])
    store.write_batch(skips=[SkipRecord(b"3.jpg", 1, 1, "corrupt", "-")])
    assert store.integrity_check() == "ok"
    with _raw(db_path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
    assert store.file_size() > 0


# -- transactions and locking -------------------------------------------------------------------


def test_failed_batch_leaves_nothing(store, db_path):
    store.write_batch([_record(b"before.jpg")])
    good, bad = _record(b"a.jpg"), _record(b"b.jpg", width=None)  # NOT NULL violated by the second record
    with pytest.raises(StoreError) as info:
        store.write_batch([good, bad], skips=[SkipRecord(b"s.jpg", 1, 1, "corrupt", "-")])
    assert "NOT NULL" in str(info.value)
    assert store.lookup([b"a.jpg", b"b.jpg"]) == {} and store.lookup_skipped([b"s.jpg"]) == {}
    assert store.data_version == 1
    assert _count(db_path, "images") == 1 and _count(db_path, "embeddings") == 1
    # the connection is usable again
    assert store.write_batch([good]) == WriteResult(1, 0)


def test_exception_inside_transaction_rolls_back_and_propagates(store):
    with pytest.raises(ZeroDivisionError):
        with store.transaction() as db:
            db.execute("INSERT INTO meta(key, value) VALUES ('x', 'y')")
            1 / 0
    assert store.get_meta("x") is None
    with pytest.raises(ValueError):  # a non-database error inside write_batch: nothing kept either
        store.write_batch([_record(b"a.jpg"), _record(b"b.jpg", histogram=np.array(["not", "floats"]))])
    assert store.count_images() == 0 and store.data_version == 0


def test_write_while_another_connection_holds_the_lock(db_path):
    with Store(db_path, busy_timeout_s=0.2) as store:
        other = sqlite3.connect(db_path, isolation_level=None, timeout=0)
        other.execute("BEGIN IMMEDIATE")
        try:
            start = time.monotonic()
            with pytest.raises(StoreError) as info:
                store.write_batch([_record(b"a.jpg")])
            waited = time.monotonic() - start
            assert "locked" in str(info.value) and str(db_path) in str(info.value)
            assert info.value.__cause__ is None
            assert 0.15 <= waited < 5, f"busy timeout not honoured: waited {waited:.2f}s"
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert store.count_images() == 0
        assert store.write_batch([_record(b"a.jpg")]) == WriteResult(1, 0)  # works once the lock is gone


def test_open_reader_does_not_block_writer(db_path):
    # WAL: a long read transaction elsewhere must not make writes fail
    with Store(db_path, busy_timeout_s=0.2) as store:
        store.write_batch([_record(b"a.jpg")])
        reader = sqlite3.connect(db_path, isolation_level=None)
        reader.execute("BEGIN")
        assert reader.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 1
        store.write_batch([_record(b"b.jpg")])
        assert reader.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 1  # its snapshot
        reader.execute("COMMIT")
        assert reader.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 2
        reader.close()


# -- read-only ----------------------------------------------------------------------------------


def test_readonly_missing_database_is_not_created(tmp_path):
    path = tmp_path / "out" / "images.db"
    with pytest.raises(StoreError) as info:
        Store(path, readonly=True)
    assert "index" in str(info.value)
    assert not path.exists() and not path.parent.exists()


def test_readonly_reads_and_refuses_writes(db_path):
    with Store(db_path) as s:
        s.write_batch([_record(b"a.jpg")])
    with Store(db_path, readonly=True) as ro:
        assert ro.count_images() == 1 and ro.data_version == 1
        with pytest.raises(StoreError) as info:
            ro.write_batch([_record(b"b.jpg")])
        assert "read-only" in str(info.value)
    with Store(db_path) as s:
        assert s.count_images() == 1


def test_readonly_unmigrated_database_is_refused(tmp_path):
    path = tmp_path / "images.db"
    sqlite3.connect(path).execute("CREATE TABLE t(x)").connection.close()
    with pytest.raises(StoreError) as info:
        Store(path, readonly=True)
    assert "upgrading" in str(info.value)


@pytest.mark.parametrize("folder", ["a?b", "c#d", "50%", "e%20f", "sp ace"])
def test_readonly_with_uri_special_characters_in_path(tmp_path, folder):
    path = tmp_path / folder / "images.db"
    with Store(path) as s:
        s.write_batch([_record(b"a.jpg")])
    before = sorted(p.name for p in tmp_path.iterdir())
    with Store(path, readonly=True) as ro:
        assert ro.count_images() == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no stray database created elsewhere
