"""Every SQLite error of the store as a one-line ``StoreError``: a connection wrapper and the messages.

Damage shows up late (a malformed page is only hit when a query steps onto it, maybe while a cursor
is iterated), so every ``execute`` and every fetch goes through here, not just opening and commit.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from imagerec.errors import StoreError


class GuardedCursor:
    """A cursor whose fetches raise ``StoreError`` instead of ``sqlite3.DatabaseError``."""

    def __init__(self, cursor: sqlite3.Cursor, path: Path):
        self._cursor = cursor
        self._path = path

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    def fetchone(self) -> Any:
        try:
            return self._cursor.fetchone()
        except sqlite3.DatabaseError as exc:
            raise StoreError(explain(self._path, exc)) from None

    def fetchall(self) -> list:
        try:
            return self._cursor.fetchall()
        except sqlite3.DatabaseError as exc:
            raise StoreError(explain(self._path, exc)) from None

    def __iter__(self) -> Iterator[Any]:
        while True:
            try:
                rows = self._cursor.fetchmany(1000)
            except sqlite3.DatabaseError as exc:
                raise StoreError(explain(self._path, exc)) from None
            if not rows:
                return
            yield from rows


class GuardedConnection:
    """The parts of ``sqlite3.Connection`` the store uses, with errors made readable."""

    def __init__(self, db: sqlite3.Connection, path: Path):
        self._db = db
        self._path = path

    def execute(self, sql: str, params: Any = ()) -> GuardedCursor:
        try:
            return GuardedCursor(self._db.execute(sql, params), self._path)
        except sqlite3.DatabaseError as exc:
            raise StoreError(explain(self._path, exc)) from None

    def executemany(self, sql: str, params: Any) -> GuardedCursor:
        try:
            return GuardedCursor(self._db.executemany(sql, params), self._path)
        except sqlite3.DatabaseError as exc:
            raise StoreError(explain(self._path, exc)) from None

    @property
    def in_transaction(self) -> bool:
        return self._db.in_transaction

    def close(self) -> None:
        self._db.close()


def damaged_hint(path: Path) -> str:
    """What to do about a damaged database (the tail of every such message)."""
    return (f"check it with 'imagerec doctor' or sqlite3 {path} \"PRAGMA integrity_check\"; to recover, "
            f"move {path.name} away and re-run 'index' (features are recomputed from data.image_root)")


def explain(path: Path, exc: sqlite3.DatabaseError) -> str:
    """One line for ``exc`` raised on the database at ``path``: what happened and what to do."""
    text = str(exc)
    if "locked" in text or "busy" in text:
        return f"{path}: database is locked by another imagerec process; wait for it to finish (or stop it) and retry"
    if "full" in text or "disk I/O error" in text:  # a file size limit (EFBIG) reaches SQLite as an I/O error
        return (f"disk full at {path} (or the disk failed: {text}), nothing was lost: the failed batch was rolled back; "
                "free some space and re-run to resume")
    if "not a database" in text or "malformed" in text or "no such" in text or "corrupt" in text:
        return f"{path}: not a valid imagerec database, or a damaged one ({text}); {damaged_hint(path)}"
    if "readonly" in text or "read-only" in text:
        return f"{path}: database is read-only; check the permissions of {path.parent}"
    return f"{path}: database error: {text}"
