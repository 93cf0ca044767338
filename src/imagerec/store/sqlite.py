"""SQLite storage for images, their features, embeddings and skip records.

One file (``images.db``), WAL mode, every write batch in one ``BEGIN IMMEDIATE`` transaction, so a
crash at any moment leaves each image with a complete row or none. The schema is versioned with
``PRAGMA user_version`` and the migrations in ``migrations.py``; a database newer than the code is refused.

Encodings: ``path`` is the path relative to the image root as raw bytes ('/'-separated, exactly what
the file system returned, so non-UTF-8 names survive); vectors are little-endian float32 BLOBs; the
64-bit dHash is stored as a signed INTEGER (see ``features.hash_to_int64``). Image ids come from
``AUTOINCREMENT``: a path keeps its id while it exists, and ids of removed images are never reused.

A ``Store`` is one connection: use it from one thread at a time (``readers.StoreReaders`` gives every
thread its own read-only one).
"""

from __future__ import annotations

import os
import sqlite3
import time
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from imagerec.closing import Closing
from imagerec.errors import StoreError
from imagerec.store.guard import GuardedConnection, explain as _explain
from imagerec.store.migrations import MIGRATIONS, SCHEMA_VERSION
from imagerec.store.records import (FeatureRows, ImageRecord, SkipRecord, StoredImage, StoredState, WriteResult, check_blob,
                                    stack_blobs)
from imagerec.vectors import from_blob, to_blob

MODEL_ID_KEY = "model_id"
MODEL_INIT_KEY = "model_init"


class Store(Closing):
    """Connection to ``images.db``. Use as a context manager or call ``close()``."""

    def __init__(self, path: Path, *, readonly: bool = False, busy_timeout_s: float = 10.0):
        self.path = Path(path)
        if readonly and not self.path.exists():
            raise StoreError(f"{self.path}: no database yet; run 'index' first")
        try:
            if not readonly:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            # percent-encode: a '?', '#' or '%' in the path would otherwise be read as URI syntax
            uri = f"file:{urllib.parse.quote(os.fsencode(self.path))}?mode=ro" if readonly else str(self.path)
            self._db = GuardedConnection(sqlite3.connect(uri, uri=readonly, isolation_level=None, timeout=busy_timeout_s,
                                                         check_same_thread=False), self.path)
        except sqlite3.DatabaseError as exc:
            raise StoreError(_explain(self.path, exc)) from None
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot open database ({exc.strerror})") from None
        try:
            self._db.execute("PRAGMA foreign_keys = ON")
            if not readonly:
                self._db.execute("PRAGMA journal_mode = WAL")
                self._db.execute("PRAGMA synchronous = NORMAL")
            self._migrate(readonly)
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        self._db.close()

    # -- schema -----------------------------------------------------------------------------------

    def _migrate(self, readonly: bool) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: database schema v{version} is newer than this imagerec understands "
                f"(v{SCHEMA_VERSION}); upgrade imagerec or index into another output.dir"
            )
        if version < SCHEMA_VERSION and readonly:
            raise StoreError(f"{self.path}: database schema v{version} needs upgrading; run 'index' once")
        for number in range(version, SCHEMA_VERSION):
            with self.transaction() as db:
                MIGRATIONS[number](db)
                db.execute(f"PRAGMA user_version = {number + 1}")

    @property
    def schema_version(self) -> int:
        return self._db.execute("PRAGMA user_version").fetchone()[0]

    @contextmanager
    def transaction(self) -> Iterator[GuardedConnection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; rolled back on any exception, errors made readable."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._rollback()
            raise
        else:
            try:
                self._db.execute("COMMIT")
            except StoreError:
                self._rollback()
                raise

    def _rollback(self) -> None:
        if self._db.in_transaction:  # SQLite may already have rolled back (e.g. disk full)
            self._db.execute("ROLLBACK")

    # -- meta -------------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    @property
    def model_id(self) -> str | None:
        """Id of the model the collection's embeddings are made with (set by ``index``), None before any."""
        return self.get_meta(MODEL_ID_KEY)

    def set_model_id(self, model_id: str, init: str | None = None) -> None:
        """Record the collection's model (and how its weights started: it picks the default fusion weights)."""
        self.set_meta(MODEL_ID_KEY, model_id)
        if init is not None:
            self.set_meta(MODEL_INIT_KEY, init)

    @property
    def model_init(self) -> str | None:
        """"imagenet" or "random" for the collection's model; None when not recorded (collections indexed before)."""
        return self.get_meta(MODEL_INIT_KEY)

    @property
    def data_version(self) -> int:
        """Incremented by every committed change to images or embeddings (ANN staleness check)."""
        return int(self.get_meta("data_version") or 0)

    # -- incremental indexing ---------------------------------------------------------------------

    def lookup(self, paths: Sequence[bytes]) -> dict[bytes, StoredState]:
        """Stored state of those of ``paths`` that have an image row."""
        if not paths:
            return {}
        marks = ",".join("?" * len(paths))
        rows = self._db.execute(
            f"SELECT i.path, i.id, i.size, i.mtime_ns, i.histogram_key, e.model_id FROM images i "
            f"LEFT JOIN embeddings e ON e.image_id = i.id WHERE i.path IN ({marks})",
            list(paths),
        )
        return {row[0]: StoredState(*row[1:]) for row in rows}

    def lookup_skipped(self, paths: Sequence[bytes]) -> dict[bytes, tuple[int, int, str]]:
        """(size, mtime_ns, settings) of those of ``paths`` recorded as skipped."""
        if not paths:
            return {}
        marks = ",".join("?" * len(paths))
        rows = self._db.execute(f"SELECT path, size, mtime_ns, settings FROM skipped WHERE path IN ({marks})", list(paths))
        return {row[0]: (row[1], row[2], row[3]) for row in rows}

    def begin_scan(self) -> None:
        """Start tracking which paths a scan saw (a temp table, so memory stays flat)."""
        self._db.execute("CREATE TEMP TABLE IF NOT EXISTS seen(path BLOB PRIMARY KEY)")
        self._db.execute("DELETE FROM temp.seen")

    def mark_seen(self, paths: Iterable[bytes]) -> None:
        self._db.executemany("INSERT OR IGNORE INTO temp.seen(path) VALUES (?)", ((p,) for p in paths))

    def count_unseen(self) -> int:
        """Images whose paths the current scan has not marked seen (what ``remove_unseen`` would delete)."""
        return self._db.execute("SELECT COUNT(*) FROM images WHERE path NOT IN (SELECT path FROM temp.seen)").fetchone()[0]

    def remove_unseen(self) -> int:
        """After a complete scan: delete images and skip records whose files are gone. Returns images removed."""
        with self.transaction() as db:
            removed = db.execute("DELETE FROM images WHERE path NOT IN (SELECT path FROM temp.seen)").rowcount
            db.execute("DELETE FROM skipped WHERE path NOT IN (SELECT path FROM temp.seen)")
            if removed:
                self._bump_version(db)
        return removed

    def write_batch(
        self,
        records: Sequence[ImageRecord] = (),
        skips: Sequence[SkipRecord] = (),
        embeddings: Sequence[tuple[int, np.ndarray, str]] = (),
    ) -> WriteResult:
        """Write new/changed images, skip records and embeddings of existing images in one transaction."""
        now = time.time()
        inserted = updated = 0
        with self.transaction() as db:
            for rec in records:
                existed = db.execute("SELECT id FROM images WHERE path = ?", (rec.path,)).fetchone()
                image_id = db.execute(
                    "INSERT INTO images(path, size, mtime_ns, width, height, format, histogram, histogram_key, dhash, indexed_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET "
                    "size = excluded.size, mtime_ns = excluded.mtime_ns, width = excluded.width, height = excluded.height, "
                    "format = excluded.format, histogram = excluded.histogram, histogram_key = excluded.histogram_key, "
                    "dhash = excluded.dhash, indexed_at = excluded.indexed_at RETURNING id",
                    (rec.path, rec.size, rec.mtime_ns, rec.width, rec.height, rec.format,
                     to_blob(rec.histogram), rec.histogram_key, rec.dhash, now),
                ).fetchone()[0]
                if existed:
                    updated += 1
                else:
                    inserted += 1
                if rec.embedding is not None and rec.model_id is not None:
                    _put_embedding(db, image_id, rec.embedding, rec.model_id)
                else:  # the file changed and no model is at hand: an old embedding would be wrong
                    db.execute("DELETE FROM embeddings WHERE image_id = ?", (image_id,))
            if records:
                db.executemany("DELETE FROM skipped WHERE path = ?", ((r.path,) for r in records))
            for image_id, vector, model_id in embeddings:
                _put_embedding(db, image_id, vector, model_id)
            for skip in skips:
                db.execute("DELETE FROM images WHERE path = ?", (skip.path,))
                db.execute(
                    "INSERT INTO skipped(path, size, mtime_ns, reason, detail, settings, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT(path) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns, reason = excluded.reason, "
                    "detail = excluded.detail, settings = excluded.settings, recorded_at = excluded.recorded_at",
                    (skip.path, skip.size, skip.mtime_ns, skip.reason, skip.detail, skip.settings, now),
                )
            if records or embeddings or skips:
                self._bump_version(db)
        return WriteResult(inserted, updated)

    @staticmethod
    def _bump_version(db: sqlite3.Connection) -> None:
        db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'data_version'")

    # -- reading ----------------------------------------------------------------------------------

    def count_images(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM images").fetchone()[0]

    def count_embeddings_by_model(self) -> dict[str, int]:
        rows = self._db.execute("SELECT model_id, COUNT(*) FROM embeddings GROUP BY model_id ORDER BY COUNT(*) DESC")
        return {model_id: count for model_id, count in rows}

    def count_skipped_by_reason(self) -> dict[str, int]:
        rows = self._db.execute("SELECT reason, COUNT(*) FROM skipped GROUP BY reason ORDER BY COUNT(*) DESC, reason")
        return {reason: count for reason, count in rows}

    def iter_skipped(self) -> Iterator[tuple[bytes, str, str]]:
        """(path, reason, detail) of every skipped file, ordered by path."""
        yield from self._db.execute("SELECT path, reason, detail FROM skipped ORDER BY path")

    def max_image_id(self) -> int:
        return self._db.execute("SELECT COALESCE(MAX(id), 0) FROM images").fetchone()[0]

    def get_images(self, ids: Sequence[int], model_id: str | None = None) -> list[StoredImage]:
        """Rows for ``ids`` (missing ids are left out), with the embedding of ``model_id`` if given."""
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        rows = self._db.execute(
            f"SELECT i.id, i.path, i.width, i.height, i.histogram, i.dhash, e.vector FROM images i "
            f"LEFT JOIN embeddings e ON e.image_id = i.id AND e.model_id IS ? WHERE i.id IN ({marks})",
            [model_id, *ids],
        )
        out = []
        for r in rows:
            check_blob(r[0], r[4], "histogram", self.path)
            if r[6] is not None:
                check_blob(r[0], r[6], "embedding", self.path)
            out.append(StoredImage(r[0], r[1], r[2], r[3], from_blob(r[4]), r[5], None if r[6] is None else from_blob(r[6])))
        return out

    def find_by_path(self, rel_path: bytes) -> int | None:
        row = self._db.execute("SELECT id FROM images WHERE path = ?", (rel_path,)).fetchone()
        return row[0] if row else None

    def iter_embeddings(self, model_id: str, chunk_size: int = 10_000, after_id: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (ids int64, vectors float32 (n, d)) chunks in id order, ``chunk_size`` rows at a time."""
        sql = "SELECT image_id, vector FROM embeddings WHERE model_id = ? AND image_id > ? ORDER BY image_id LIMIT ?"
        for rows in self._pages(sql, model_id, chunk_size, after_id):
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            yield ids, stack_blobs(ids.tolist(), [r[1] for r in rows], "embedding", self.path)

    def _pages(self, sql: str, model_id: str, chunk_size: int, after_id: int) -> Iterator[list[tuple]]:
        """Keyset pagination: ``sql`` takes (model_id, last id, limit) and returns rows whose first column is the id."""
        last = after_id
        while rows := self._db.execute(sql, (model_id, last, chunk_size)).fetchall():
            last = rows[-1][0]
            yield rows

    def read(self, sql: str, params: Sequence = ()) -> list[tuple]:
        """All rows of a read-only ``SELECT`` (for views of the data that live with their caller, e.g. web pages)."""
        return self._db.execute(sql, list(params)).fetchall()

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check``: "ok" for a sound file, else its first 20 findings joined by '; '."""
        return "; ".join(row[0] for row in self._db.execute("PRAGMA integrity_check(20)"))

    def missing_tables(self) -> list[str]:
        """Tables of the schema that are not in the file (dropped by hand or lost to damage)."""
        present = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return [t for t in ("images", "embeddings", "skipped", "meta") if t not in present]

    def bad_blob_ids(self, histogram_key: str, histogram_bytes: int) -> tuple[list[int], list[int]]:
        """Ids of images whose ``histogram_key`` histogram is not ``histogram_bytes`` long, and of those whose
        embedding has a size other than most of its model's (or is not a BLOB)."""
        hists = [r[0] for r in self._db.execute(
            "SELECT id FROM images WHERE histogram_key = ? AND (typeof(histogram) != 'blob' OR length(histogram) != ?) "
            "ORDER BY id", (histogram_key, histogram_bytes))]
        common = {m: n for m, n, _ in self._db.execute(
            "SELECT model_id, length(vector) AS n, COUNT(*) AS c FROM embeddings WHERE typeof(vector) = 'blob' "
            "GROUP BY model_id, n ORDER BY c")}  # the most common size of each model comes last and wins
        vectors = [image_id for image_id, model_id, kind, n in self._db.execute(
            "SELECT image_id, model_id, typeof(vector), length(vector) FROM embeddings ORDER BY image_id")
            if kind != "blob" or n != common.get(model_id) or n % 4]
        return hists, vectors

    def drop_rows(self, image_ids: Sequence[int], embedding_ids: Sequence[int]) -> None:
        """Delete those images (their embeddings go with them) and those embeddings; the next index recomputes them."""
        with self.transaction() as db:
            db.executemany("DELETE FROM images WHERE id = ?", ((i,) for i in image_ids))
            db.executemany("DELETE FROM embeddings WHERE image_id = ?", ((i,) for i in embedding_ids))
            self._bump_version(db)

    def file_size(self) -> int:
        """Bytes on disk, WAL included."""
        return sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal")) if p.exists())

    # -- ANN index and query (issue 4) ------------------------------------------------------------

    @contextmanager
    def read_snapshot(self) -> Iterator[None]:
        """Every read inside sees one committed state of the database (a WAL read transaction).

        Re-entrant: inside an open snapshot (or transaction) of this connection it joins that one.
        """
        if self._db.in_transaction:
            yield
            return
        self._db.execute("BEGIN DEFERRED")
        try:
            yield
        finally:
            if self._db.in_transaction:
                self._db.execute("COMMIT")

    def embedding_ids(self, model_id: str) -> np.ndarray:
        """Ids (int64, ascending) of every image with an embedding of ``model_id``."""
        rows = self._db.execute("SELECT image_id FROM embeddings WHERE model_id = ? ORDER BY image_id", (model_id,))
        return np.fromiter((r[0] for r in rows), dtype=np.int64)

    def ids_indexed_since(self, model_id: str, since: float) -> np.ndarray:
        """Ids of images (with a ``model_id`` embedding) whose row was written at or after unix time ``since``."""
        rows = self._db.execute(
            "SELECT i.id FROM images i JOIN embeddings e ON e.image_id = i.id WHERE e.model_id = ? AND i.indexed_at >= ? ORDER BY i.id",
            (model_id, since),
        )
        return np.fromiter((r[0] for r in rows), dtype=np.int64)

    def hashes(self, model_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(ids, dHashes as int64) of every image with a ``model_id`` embedding, in id order (16 bytes a row)."""
        rows = self._db.execute(
            "SELECT i.id, i.dhash FROM images i JOIN embeddings e ON e.image_id = i.id WHERE e.model_id = ? ORDER BY i.id",
            (model_id,),
        ).fetchall()
        table = np.array(rows, dtype=np.int64).reshape(-1, 2)
        return table[:, 0].copy(), table[:, 1].copy()

    def get_features(self, ids: Sequence[int], model_id: str) -> FeatureRows:
        """Features of those ``ids`` that exist and have a ``model_id`` embedding, as arrays in id order."""
        unique = sorted({int(i) for i in ids})
        parts = []
        for start in range(0, len(unique), 10_000):
            chunk = unique[start : start + 10_000]
            marks = ",".join("?" * len(chunk))
            parts.append(self._db.execute(
                f"SELECT i.id, i.path, i.histogram, i.dhash, e.vector FROM images i JOIN embeddings e ON e.image_id = i.id "
                f"WHERE e.model_id = ? AND i.id IN ({marks}) ORDER BY i.id",
                [model_id, *chunk],
            ).fetchall())
        return FeatureRows.from_rows([row for part in parts for row in part], self.path)

    def iter_features(self, model_id: str, chunk_size: int = 10_000, after_id: int = 0) -> Iterator[FeatureRows]:
        """All images with a ``model_id`` embedding, ``chunk_size`` rows at a time, in id order."""
        sql = ("SELECT i.id, i.path, i.histogram, i.dhash, e.vector FROM images i JOIN embeddings e ON e.image_id = i.id "
               "WHERE e.model_id = ? AND i.id > ? ORDER BY i.id LIMIT ?")
        for rows in self._pages(sql, model_id, chunk_size, after_id):
            yield FeatureRows.from_rows(rows, self.path)


def _put_embedding(db: sqlite3.Connection, image_id: int, vector: np.ndarray, model_id: str) -> None:
    db.execute(
        "INSERT INTO embeddings(image_id, model_id, vector) VALUES (?, ?, ?) "
        "ON CONFLICT(image_id) DO UPDATE SET model_id = excluded.model_id, vector = excluded.vector",
        (image_id, model_id, to_blob(vector)),
    )
