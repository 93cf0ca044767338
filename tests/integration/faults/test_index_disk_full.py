"""A full disk (a file size limit: SQLite sees EFBIG) during ``index``: one line, committed rows kept, a re-run resumes."""

from __future__ import annotations

import sqlite3

from fault_procs import Run, clean_stderr, copy_sample, fsize_limit, write_config


def test_disk_full_during_index_is_one_line_and_a_rerun_resumes(tmp_path):
    photos = copy_sample(tmp_path / "photos")
    out = tmp_path / "out"
    config = write_config(tmp_path / "config.yaml", photos, out, index={"workers": 2, "batch_size": 16})
    run = Run(config, tmp_path, "full", "index", "-q", preexec=fsize_limit(96 * 1024))
    rc = run.proc.wait(timeout=300)
    err = run.stderr()
    assert rc not in (0, -25), err[-1000:]  # -25: SIGXFSZ
    assert clean_stderr(err), err[-2000:]
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "disk full at" in lines[0] and "nothing was lost" in lines[0], err[-1000:]
    with sqlite3.connect(out / "images.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        kept = db.execute("SELECT COUNT(*) FROM images").fetchone()[0]
    total = sum(1 for p in photos.rglob("*.jpg"))
    assert kept < total
    again = Run(config, tmp_path, "again", "index", "-q")
    assert again.proc.wait(timeout=300) == 0, again.stderr()[-1000:]
    assert f"indexed {total - kept} new" in again.out.read_text()
