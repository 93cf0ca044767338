"""Storage errors become one-line StoreErrors: SQLite errors at any step, and BLOBs of the wrong size on read."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from imagerec.errors import StoreError
from imagerec.store import Store
from imagerec.store.lock import WriterBusy, writer_lock
from imagerec.store.records import FeatureRows, ImageRecord, printable


def _row(image_id, hist=b"\0" * 16, vector=b"\0" * 8):
    return (image_id, b"p.jpg", hist, 0, vector)


@pytest.mark.parametrize("bad", [b"\0" * 10, b"\0" * 12, b"", None])
def test_a_blob_of_another_size_names_the_image(bad):
    rows = [_row(1), _row(7, vector=bad), _row(9)]
    with pytest.raises(StoreError, match=r"images.db: image id 7 has a damaged embedding .*doctor"):
        FeatureRows.from_rows(rows, "images.db")
    assert FeatureRows.from_rows([_row(1), _row(9)]).embeddings.shape == (2, 2)


def test_errors_while_reading_a_dropped_table_are_store_errors(tmp_path):
    db = tmp_path / "images.db"
    with Store(db) as store:
        store.write_batch([ImageRecord(b"a.jpg", 1, 2, 3, 4, "JPEG", np.zeros(8, np.float32), "k", 5)])
    with sqlite3.connect(db) as con:
        con.execute("DROP TABLE images")
    with Store(db, readonly=True) as store, pytest.raises(StoreError, match="no such table: images.*integrity_check"):
        store.count_images()


def test_the_writer_lock_is_exclusive_and_released(tmp_path):
    lock = tmp_path / "out" / "index.lock"
    with writer_lock(lock):
        # flock locks belong to the open file description: a second open in this process conflicts too
        with pytest.raises(WriterBusy, match=r"another index is running \(pid \d+\)"):
            with writer_lock(lock):
                pass
    with writer_lock(lock):  # released
        pass


def test_printable_escapes_control_characters():
    assert printable("a\nb\rc\x1b[31m.jpg") == "a\\nb\\rc\\x1b[31m.jpg"
    assert printable("été.jpg") == "été.jpg"
