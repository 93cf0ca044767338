"""Temporaries a killed writer left (``<name>.<random>.tmp``) are removed by the next command that writes
that file; files of other naming, fresh ones and ones a live writer still holds are never touched."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fault_procs import Run, copy_sample, write_config

HOUR_AGO = time.time() - 3600


def _touch(path: Path, age_from: float | None = HOUR_AGO) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * 100)
    if age_from is not None:
        os.utime(path, (age_from, age_from))
    return path


def test_only_stale_unlocked_temporaries_of_our_naming_are_removed(tmp_path):
    from imagerec.atomic import remove_stale_temps

    target = tmp_path / "checkpoint.pt"
    stale = _touch(tmp_path / "checkpoint.pt.k2j_x9aq.tmp")
    fresh = _touch(tmp_path / "checkpoint.pt.abcdefgh.tmp", age_from=None)
    foreign = [_touch(tmp_path / name) for name in ("checkpoint.pt.bak", "notes.tmp", "checkpoint.pt.tmp",
                                                     "checkpoint.pt.abc.tmp", "other.pt.abcdefgh.tmp")]
    held = _touch(tmp_path / "checkpoint.pt.held1234.tmp")
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'rb'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)", str(held)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert remove_stale_temps(target) == [stale]
    finally:
        holder.kill()
        holder.wait()
    assert not stale.exists() and fresh.exists() and held.exists() and all(p.exists() for p in foreign)
    assert remove_stale_temps(target) == [held]  # its writer is gone now


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return copy_sample(tmp_path_factory.mktemp("temps") / "photos")


def test_train_removes_what_a_killed_run_left(tmp_path, photos):
    out = tmp_path / "out"
    config = write_config(tmp_path / "c.yaml", photos, out, train={"epochs": 1, "max_images": 300})
    killed = Run(config, tmp_path, "killed", "train-embeddings", "--quiet")
    try:  # a real kill -9 while the cache is being decoded into its temporary
        assert killed.wait_until(lambda: any((out / "cache").glob("train_*.u8.*.tmp"))), killed.stderr()
        os.killpg(killed.pid, signal.SIGKILL)
        killed.proc.wait(timeout=30)
    finally:
        killed.kill()
    left = list((out / "cache").glob("*.tmp"))
    assert left, "the kill left no temporary to clean"
    ours = left + [_touch(out / "checkpoints" / "checkpoint.pt.q1w2e3r4.tmp"),
                   _touch(out / "embedding_model.pt.zz_99aab.tmp")]
    for path in left:
        os.utime(path, (HOUR_AGO, HOUR_AGO))
    foreign = [_touch(out / "checkpoints" / "keep.tmp"), _touch(out / "embedding_model.pt.bak"),
               _touch(out / "cache" / "train_notes.txt")]
    run = Run(config, tmp_path, "again", "train-embeddings", "--quiet")
    assert run.proc.wait(timeout=300) == 0, run.stderr()
    assert [p for p in ours if p.exists()] == []
    assert all(p.exists() for p in foreign)
    assert list(out.rglob("*.*.tmp")) == []
