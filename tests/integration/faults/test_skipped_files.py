"""Skipped files are retried when the settings they depended on change, or on request; every passed-over file is
counted with a reason; a file swapped for a symlink after the scan is not followed."""

from __future__ import annotations

import os
import sqlite3

import yaml

from ann_support import SAMPLE_DIR, run_cli
from imagerec.config import load_config
from imagerec.data import loading
from imagerec.data.scan import scan_images
from imagerec.indexing.decode import decode_one
from imagerec.indexing.plan import WorkItem
from imagerec.indexing.run import index_collection, index_settings, make_sink
from imagerec.indexing.summary import IndexProgress, IndexSummary, format_summary
from imagerec.store import Store
from imagerec.store.migrations import MIGRATIONS

PHOTO = SAMPLE_DIR / "Leopards" / "image_0002.jpg"


def _config(tmp_path, root, **index):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"data": {"image_root": str(root)}, "output": {"dir": str(tmp_path / "out")},
                                    "index": {"workers": 1, **index}, "model": {"arch": "resnet18", "init": "random"}}))
    return path


def _skips(tmp_path) -> dict[bytes, tuple[str, str]]:
    with sqlite3.connect(tmp_path / "out" / "images.db") as con:
        return {p: (r, d) for p, r, d in con.execute("SELECT path, reason, detail FROM skipped")}


def test_raising_the_pixel_limit_retries_the_bombs_and_the_message_names_the_limit(tmp_path, make_image):
    root = tmp_path / "photos"
    make_image(root / "big.png", size=(200, 200))
    make_image(root / "small.png", size=(50, 50))
    config = _config(tmp_path, root, max_image_pixels=10_000)
    first = run_cli(config, "index", "-q")
    assert first.returncode == 0 and "1 decompression_bomb" in first.stdout, first.stdout + first.stderr
    reason, detail = _skips(tmp_path)[b"big.png"]
    assert "10,000" in detail and "20,000" not in detail, detail  # the configured value, not Pillow's doubled one
    assert "1 skipped before and unchanged" in run_cli(config, "index", "-q").stdout
    config = _config(tmp_path, root, max_image_pixels=100_000)
    again = run_cli(config, "index", "-q")
    assert "indexed 1 new" in again.stdout and "skipped before" not in again.stdout, again.stdout
    assert _skips(tmp_path) == {}


def test_widening_the_formats_retries_and_retry_skipped_forces_it(tmp_path, make_image):
    root = tmp_path / "photos"
    make_image(root / "a.bmp", fmt="BMP")
    (root / "broken.png").write_bytes(make_image(tmp_path / "x.png").read_bytes()[:60])
    narrow = _config(tmp_path, root, formats=["JPEG", "PNG"])
    first = run_cli(narrow, "index", "-q")
    assert "1 format_not_allowed" in first.stdout, first.stdout + first.stderr
    unchanged = run_cli(narrow, "index", "-q")
    assert "2 skipped before and unchanged" in unchanged.stdout and "--retry-skipped" in unchanged.stdout
    forced = run_cli(narrow, "index", "-q", "--retry-skipped")
    assert "skipped 2 this run" in forced.stdout, forced.stdout + forced.stderr
    wide = run_cli(_config(tmp_path, root, formats=["JPEG", "PNG", "BMP"]), "index", "-q")
    assert "indexed 1 new" in wide.stdout and "skipped 1 this run" in wide.stdout, wide.stdout


def test_an_old_database_is_upgraded_and_its_skips_retried_once(tmp_path, make_image):
    root = tmp_path / "photos"
    image = make_image(root / "a.png")
    db = tmp_path / "out" / "images.db"
    db.parent.mkdir()
    with sqlite3.connect(db) as con:  # a schema v1 database, as the previous release wrote it
        MIGRATIONS[0](con)
        st = image.stat()
        con.execute("INSERT INTO skipped VALUES (?, ?, ?, 'decompression_bomb', 'old', 0)", (b"a.png", st.st_size, st.st_mtime_ns))
        con.execute("PRAGMA user_version = 1")
    summary = index_collection(load_config(_config(tmp_path, root)))
    assert summary.indexed == 1 and summary.skipped_known == 0
    with Store(db, readonly=True) as store:
        assert store.schema_version == len(MIGRATIONS) and store.count_images() == 1


def test_passed_over_files_are_counted_with_a_reason(tmp_path, make_image):
    root = tmp_path / "photos"
    make_image(root / "a.png")
    (root / "IMG_0001").write_bytes(PHOTO.read_bytes())  # an export that lost its extension
    folder = os.open(root, os.O_RDONLY)
    for _ in range(18):  # a tree deeper than PATH_MAX (4096) bytes
        os.mkdir("d" * 250, dir_fd=folder)
        inner = os.open("d" * 250, os.O_RDONLY, dir_fd=folder)
        os.close(folder)
        folder = inner
    fd = os.open("deep.jpg", os.O_WRONLY | os.O_CREAT, dir_fd=folder)
    os.write(fd, PHOTO.read_bytes())
    os.close(fd)
    os.close(folder)
    done = run_cli(_config(tmp_path, root), "index", "-q")
    assert done.returncode == 0 and "indexed 1 new" in done.stdout, done.stdout + done.stderr
    assert "1 files without an extension" in done.stdout and "1 paths longer than PATH_MAX" in done.stdout, done.stdout


def _decode_after_scan(tmp_path, root, change) -> IndexSummary:
    """Scan ``root``, apply ``change`` to the tree, then decode and write what the scan found (the real stages)."""
    config = load_config(_config(tmp_path, root))
    settings = index_settings(config, None)
    scanned = list(scan_images(root))
    change()
    summary = IndexSummary()
    with Store(config.output.layout.db) as store:
        sink = make_sink(store, settings, None, summary, IndexProgress(None, None, summary))
        sink.add([decode_one(WorkItem(f, None, False), settings.decode) for f in scanned])
        sink.flush()
    return summary


def test_a_file_deleted_between_scan_and_decode_is_counted(tmp_path, make_image):
    root = tmp_path / "photos"
    make_image(root / "a.png")
    gone = make_image(root / "b.png", seed=1)
    summary = _decode_after_scan(tmp_path, root, gone.unlink)
    assert summary.indexed == 1 and summary.vanished == 1
    assert "1 files deleted since the scan" in format_summary(summary)


def test_a_file_replaced_by_a_symlink_after_the_scan_is_not_followed(tmp_path, make_image):
    root = tmp_path / "photos"
    swapped = make_image(root / "a.png")
    outside = make_image(tmp_path / "secret.png", seed=3)

    def swap():
        swapped.unlink()
        swapped.symlink_to(outside)

    summary = _decode_after_scan(tmp_path, root, swap)
    assert summary.indexed == 0 and summary.skipped == {loading.NOT_REGULAR: 1}
    assert "symlink" in _skips(tmp_path)[b"a.png"][1]


def test_status_lists_skipped_files_with_names_escaped(tmp_path, make_image):
    root = tmp_path / "photos"
    make_image(root / "good.png")
    (root / "evil\nname\r.png").write_bytes(b"not an image at all")
    (root / "empty.jpg").write_bytes(b"")
    config = _config(tmp_path, root)
    assert run_cli(config, "index", "-q").returncode == 0
    done = run_cli(config, "status", "--skipped")
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("  ")]
    assert len(rows) == 2, done.stdout  # one line per file: the newline in the name is escaped
    assert any("empty_file" in r and "empty.jpg" in r for r in rows)
    assert any("unidentified" in r and "evil\\nname\\r.png" in r for r in rows), rows
    listed = yaml.safe_load(run_cli(config, "status", "--skipped", "--json").stdout)["skipped_files"]
    assert {(f["path"], f["reason"]) for f in listed} == {("empty.jpg", "empty_file"), ("evil\nname\r.png", "unidentified")}
    assert all(f["detail"] for f in listed)
