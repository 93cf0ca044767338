"""Schema migrations: small named functions, applied in order, each once, inside one transaction.

``PRAGMA user_version`` counts how many have run; a database newer than the code is refused by ``Store``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable


def run_script(db: sqlite3.Connection, script: str) -> None:
    """Run statements one by one (``executescript`` would COMMIT the migration's transaction)."""
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def m001_initial(db: sqlite3.Connection) -> None:
    run_script(
        db,
        """
        CREATE TABLE images(
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            path BLOB NOT NULL UNIQUE,
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            width INTEGER NOT NULL,
            height INTEGER NOT NULL,
            format TEXT NOT NULL,
            histogram BLOB NOT NULL,
            histogram_key TEXT NOT NULL,
            dhash INTEGER NOT NULL,
            indexed_at REAL NOT NULL
        );
        CREATE TABLE embeddings(
            image_id INTEGER PRIMARY KEY REFERENCES images(id) ON DELETE CASCADE,
            model_id TEXT NOT NULL,
            vector BLOB NOT NULL
        );
        CREATE INDEX embeddings_by_model ON embeddings(model_id);
        CREATE TABLE skipped(
            path BLOB PRIMARY KEY,
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            reason TEXT NOT NULL,
            detail TEXT NOT NULL,
            recorded_at REAL NOT NULL
        );
        CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta(key, value) VALUES ('data_version', '0');
        """
    )


def m002_skip_settings(db: sqlite3.Connection) -> None:
    """Each skip record keeps the settings it depended on (``LoadSettings.skip_key``); old ones get '' = unknown,
    so they are retried once."""
    db.execute("ALTER TABLE skipped ADD COLUMN settings TEXT NOT NULL DEFAULT ''")


#: Applied in order, each once; ``PRAGMA user_version`` counts how many have run.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [m001_initial, m002_skip_settings]
SCHEMA_VERSION = len(MIGRATIONS)


