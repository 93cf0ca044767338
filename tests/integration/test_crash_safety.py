"""Crash safety, for real: ``imagerec index`` in a subprocess, killed (SIGKILL, SIGINT) mid-run.

The run covers a copy of the bundled 300-photo sample with a model present (so every batch also
embeds) and batch_size 16 (many commits). The test watches the database through a read-only
connection and strikes once some, but not all, rows are committed.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from ann_support import SAMPLE_DIR
from imagerec.embed.files import load_model

N_SAMPLE = 300
HIST_BYTES = 8**3 * 4  # default 8x8x8 float32 histogram
VECTOR_BYTES = 512 * 4


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("crash") / "photos"
    shutil.copytree(SAMPLE_DIR, root)
    assert len(sample_paths(root)) == N_SAMPLE
    return root


def sample_paths(root: Path) -> set[bytes]:
    return {os.fsencode(p.relative_to(root).as_posix()) for p in root.rglob("*.jpg")}


def write_config(path: Path, image_root: Path, out: Path, **index) -> Path:
    raw = {"data": {"image_root": str(image_root)}, "output": {"dir": str(out)},
           "runtime": {"device": "cpu", "threads": 1}, "index": {"workers": 2, "batch_size": 16, **index}, "model": {"arch": "resnet18", "init": "random"}}
    path.write_text(yaml.safe_dump(raw))
    return path


def cli(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "imagerec", "--config", str(config), *args]


def ro(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)


def count_rows(db: Path) -> int | None:
    """Committed images rows, or None while the database or its tables do not exist yet."""
    if not db.exists():
        return None
    try:
        con = ro(db)
        try:
            return con.execute("SELECT COUNT(*) FROM images").fetchone()[0]
        finally:
            con.close()
    except sqlite3.DatabaseError:
        return None


class Run:
    """``imagerec index`` in its own session (so the whole process group can be signalled)."""

    def __init__(self, config: Path, tmp: Path, name: str):
        self.stdout_path, self.stderr_path = tmp / f"{name}.out", tmp / f"{name}.err"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(cli(config, "index", "--quiet"), stdout=out, stderr=err,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         preexec_fn=_default_sigint)

    def wait_for_rows(self, db: Path, at_least: int, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"index finished before {at_least} rows were seen: {self.output()}"
            n = count_rows(db)
            if n is not None and n >= at_least:
                return n
            time.sleep(0.005)
        pytest.fail(f"no {at_least} rows within {timeout} s")

    def signal_group(self, sig: int) -> None:
        os.killpg(self.proc.pid, sig)

    def output(self) -> tuple[str, str]:
        return self.stdout_path.read_text(), self.stderr_path.read_text()

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)


def _default_sigint() -> None:
    # A shell running the suite in the background hands SIGINT down as ignored; a user's Ctrl-C is not.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def runs():
    """Started runs; whatever is still alive at the end is killed with its workers."""
    started: list[Run] = []
    yield started
    for run in started:
        if run.proc.poll() is None:
            run.kill()


def assert_consistent(db: Path, photos: Path, model_id: str) -> set[bytes]:
    """Integrity ok, every image row complete (features + embedding), no duplicates. Returns the paths."""
    con = ro(db)
    try:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert con.execute("PRAGMA foreign_key_check").fetchall() == []
        paths = [r[0] for r in con.execute("SELECT path FROM images")]
        assert len(paths) == len(set(paths)), "duplicate paths"
        assert set(paths) <= sample_paths(photos)
        incomplete = con.execute(
            "SELECT i.path FROM images i LEFT JOIN embeddings e ON e.image_id = i.id "
            "WHERE e.image_id IS NULL OR i.histogram IS NULL OR length(i.histogram) != ? OR e.model_id != ? "
            "OR length(e.vector) != ? OR i.width <= 0 OR i.height <= 0", (HIST_BYTES, model_id, VECTOR_BYTES)
        ).fetchall()
        assert incomplete == [], f"incomplete rows: {incomplete[:5]}"
        for hist, vector in con.execute("SELECT i.histogram, e.vector FROM images i JOIN embeddings e ON e.image_id = i.id"):
            assert np.frombuffer(hist, "<f4").sum() == pytest.approx(1.0, abs=1e-4)
            assert np.linalg.norm(np.frombuffer(vector, "<f4")) == pytest.approx(1.0, abs=1e-4)
        assert con.execute("SELECT COUNT(*) FROM skipped").fetchone()[0] == 0
        return set(paths)
    finally:
        con.close()


def summary_counts(stdout: str) -> dict[str, int]:
    match = re.search(r"indexed (\d+) new, (\d+) updated, (\d+) embeddings added, (\d+) unchanged, (\d+) removed", stdout)
    assert match, f"no summary line in {stdout!r}"
    return dict(zip(("indexed", "updated", "embedded", "unchanged", "removed"), map(int, match.groups())))


def rerun_to_completion(config: Path, db: Path, photos: Path, model_id: str) -> None:
    committed = assert_consistent(db, photos, model_id)
    done = subprocess.run(cli(config, "index", "--quiet"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    counts = summary_counts(done.stdout)
    assert counts == {"indexed": N_SAMPLE - len(committed), "updated": 0, "embedded": 0,
                      "unchanged": len(committed), "removed": 0}
    assert assert_consistent(db, photos, model_id) == sample_paths(photos)


@pytest.fixture
def setup(tmp_path, photos, tiny_model_file):
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(tiny_model_file, out / "embedding_model.pt")
    config = write_config(tmp_path / "config.yaml", photos, out)
    return config, out / "images.db", load_model(tiny_model_file).model_id


def test_sigkill_mid_run_loses_and_duplicates_nothing(setup, photos, tmp_path, runs):
    config, db, model_id = setup
    # Kill twice: early (after the first commits), then again during the resumed run.
    for attempt, threshold in enumerate((1, 120)):
        run = Run(config, tmp_path, f"kill{attempt}")
        runs.append(run)
        seen = run.wait_for_rows(db, threshold)
        run.signal_group(signal.SIGKILL)
        assert run.proc.wait(timeout=30) == -signal.SIGKILL
        committed = assert_consistent(db, photos, model_id)
        assert seen <= len(committed) < N_SAMPLE, f"saw {seen}, {len(committed)} committed after the kill"
    rerun_to_completion(config, db, photos, model_id)


def test_sigint_stops_cleanly_after_committing(setup, photos, tmp_path, runs):
    config, db, model_id = setup
    run = Run(config, tmp_path, "sigint")
    runs.append(run)
    seen = run.wait_for_rows(db, 16)
    run.signal_group(signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
    assert run.proc.wait(timeout=60) == 130
    stdout, stderr = run.output()
    assert "interrupted" in stderr.lower()
    assert "Traceback" not in stdout + stderr
    counts = summary_counts(stdout)
    committed = assert_consistent(db, photos, model_id)
    assert seen <= len(committed) < N_SAMPLE
    assert counts["indexed"] == len(committed)  # what it reports is what is in the database
    rerun_to_completion(config, db, photos, model_id)


def test_locked_database_is_a_one_line_error(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    for i in range(24):
        Image.new("RGB", (32, 24), (i * 10, 50, 100)).save(root / f"{i:02d}.png")
    config = write_config(tmp_path / "config.yaml", root, tmp_path / "out")
    db = tmp_path / "out" / "images.db"
    first = subprocess.run(cli(config, "index", "--quiet"), capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    for i in range(24, 40):
        Image.new("RGB", (32, 24), (i * 5, 150, 10)).save(root / f"{i:02d}.png")

    holder = sqlite3.connect(db, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock for the whole attempt
        started = time.monotonic()
        locked = subprocess.run(cli(config, "index", "--quiet"), capture_output=True, text=True, timeout=60)
        elapsed = time.monotonic() - started
        reading = subprocess.run(cli(config, "status", "--json"), capture_output=True, text=True, timeout=60)
        assert reading.returncode == 0, reading.stderr  # WAL: readers are not blocked by the writer's lock
        assert '"images": 24' in reading.stdout
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert locked.returncode != 0
    assert "Traceback" not in locked.stdout + locked.stderr
    message = locked.stderr.strip()
    assert "\n" not in message and "locked" in message, locked.stderr
    assert elapsed < 30
    assert count_rows(db) == 24  # nothing half-written

    after = subprocess.run(cli(config, "index", "--quiet"), capture_output=True, text=True, timeout=60)
    assert after.returncode == 0, after.stderr
    assert summary_counts(after.stdout)["indexed"] == 16
    assert count_rows(db) == 40
