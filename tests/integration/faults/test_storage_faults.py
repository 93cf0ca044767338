"""A damaged images.db (overwritten pages, a dropped table, short BLOBs) gives one-line errors, never a traceback.

A real collection is indexed once; each case damages a copy of its output folder and runs the real CLI.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import yaml

from ann_support import SAMPLE_DIR, index_and_build, run_cli, write_collection_config

COMMANDS = [("status",), ("query", "--id", "3", "--top-k", "3"), ("index", "-q")]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, tiny_model_file):
    base = tmp_path_factory.mktemp("pristine")
    root = base / "photos"
    for folder in sorted(SAMPLE_DIR.iterdir())[:3]:
        for image in sorted(folder.iterdir())[:12]:
            (root / folder.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(image, root / folder.name / image.name)
    collection = write_collection_config(base, root, tiny_model_file)
    index_and_build(collection)
    return collection


def _copy(pristine, tmp_path) -> tuple[Path, Path]:
    out = tmp_path / "out"
    shutil.copytree(pristine.out, out)
    raw = yaml.safe_load(pristine.config_path.read_text())
    raw["output"]["dir"] = str(out)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    return config, out / "images.db"


def _assert_clean_failure(done, db: Path) -> None:
    assert "Traceback" not in done.stderr and "sqlite3." not in done.stderr, done.stderr
    assert done.returncode != 0, done.stdout
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and str(db) in last, done.stderr


def _root_page(db: Path, table: str) -> int:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]


def _overwrite_page(db: Path, page: int, seed: int) -> None:
    with sqlite3.connect(db) as con:
        size = con.execute("PRAGMA page_size").fetchone()[0]
    data = bytearray(db.read_bytes())
    start = (page - 1) * size + (100 if page == 1 else 0)  # keep page 1's file header: the schema is what breaks
    end = page * size
    data[start:end] = np.random.default_rng(seed).integers(0, 256, end - start, dtype=np.uint8).tobytes()
    db.write_bytes(bytes(data))


@pytest.mark.parametrize("target", ["schema", "images", "embeddings"])
def test_overwritten_pages_give_one_line_errors(pristine, tmp_path, target):
    config, db = _copy(pristine, tmp_path)
    page = 1 if target == "schema" else _root_page(db, target)
    _overwrite_page(db, page, seed=page)
    failed = 0
    for command in COMMANDS:
        done = run_cli(config, *command)
        assert "Traceback" not in done.stderr, (command, done.stderr)
        if done.returncode != 0:
            _assert_clean_failure(done, db)
            assert "doctor" in done.stderr or "integrity_check" in done.stderr, done.stderr
            failed += 1
    assert failed >= 1  # the damage is where the data is: something must notice
    doctor = run_cli(config, "doctor")
    assert doctor.returncode == 1 and "Traceback" not in doctor.stderr, doctor.stdout + doctor.stderr
    assert "integrity     ok" not in doctor.stdout


@pytest.mark.parametrize("table", ["embeddings", "skipped"])
def test_a_dropped_table_is_named_and_doctor_finds_it(pristine, tmp_path, table):
    config, db = _copy(pristine, tmp_path)
    with sqlite3.connect(db) as con:
        con.execute(f"DROP TABLE {table}")
    for command in COMMANDS[:2] if table == "embeddings" else COMMANDS[::2]:
        done = run_cli(config, *command)
        _assert_clean_failure(done, db)
        assert "no such table" in done.stderr and "doctor" in done.stderr
    doctor = run_cli(config, "doctor")
    assert doctor.returncode == 1 and f"missing tables: {table}" in doctor.stdout, doctor.stdout + doctor.stderr


@pytest.mark.parametrize("column", ["vector", "histogram"])
def test_a_short_blob_names_the_image_and_doctor_repairs_it(pristine, tmp_path, column):
    config, db = _copy(pristine, tmp_path)
    table, key = ("embeddings", "image_id") if column == "vector" else ("images", "id")
    with sqlite3.connect(db) as con:
        con.execute(f"UPDATE {table} SET {column} = substr({column}, 1, 10) WHERE {key} = 3")
    done = run_cli(config, *COMMANDS[1])
    _assert_clean_failure(done, db)
    assert "image id 3" in done.stderr and "doctor" in done.stderr
    doctor = run_cli(config, "doctor")
    assert doctor.returncode == 1 and "integrity     ok" in doctor.stdout
    assert ("1 embeddings" if column == "vector" else "1 histograms") in doctor.stdout, doctor.stdout
    repaired = run_cli(config, "doctor", "--repair")
    assert repaired.returncode == 0 and "deleted" in repaired.stdout, repaired.stdout + repaired.stderr
    reindex = run_cli(config, "index", "-q")
    assert reindex.returncode == 0, reindex.stderr
    assert run_cli(config, "doctor").returncode == 0


@pytest.mark.parametrize("image_id", ["99999999999999999999999", "-99999999999999999999999"])
def test_an_id_beyond_64_bits_is_a_one_line_error(pristine, image_id):
    done = run_cli(pristine.config_path, "query", "--id", image_id)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and image_id in done.stderr, done.stderr


def test_a_file_name_with_newlines_stays_on_one_row_of_the_query_table(tmp_path, make_image, tiny_model_file):
    root = tmp_path / "photos"
    for i in range(6):
        make_image(root / f"line\n{i}\rbreak.png", seed=i)
    collection = write_collection_config(tmp_path, root, tiny_model_file)
    index_and_build(collection)
    done = run_cli(collection.config_path, "query", "--id", "1", "--top-k", "3")
    assert done.returncode == 0, done.stderr
    rows = done.stdout.strip().splitlines()[2:]
    assert len(rows) == 3 and all("line\\n" in r and "\\rbreak.png" in r for r in rows), done.stdout
