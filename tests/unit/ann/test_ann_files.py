"""Index-file helpers: checksums and their sampled shortcut, atomic writing, clean-up of leftovers."""

from __future__ import annotations

import os

import pytest

from imagerec.ann import files
from imagerec.ann.files import describe_file, file_problem, new_build_id, sweep, write_atomically
from imagerec.layout import Layout


def _flip(path, offset):
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0xFF]))


def test_small_file_problems(tmp_path):
    path = tmp_path / "ann_hnsw.20240101000000-0123abcd.bin"
    path.write_bytes(os.urandom(10_000))
    entry = describe_file(path)
    assert entry.size == 10_000 and len(entry.sha256) == 64 and entry.name == path.name
    for mode in ("sampled", "auto", "always"):
        assert file_problem(path, entry, mode) is None
    _flip(path, 5000)
    for mode in ("sampled", "auto", "always"):  # small file: the sample is the whole file
        assert "checksum mismatch" in file_problem(path, entry, mode)
    with open(path, "r+b") as fh:
        fh.truncate(100)
    assert "truncated" in file_problem(path, entry, "sampled")
    path.unlink()
    assert file_problem(path, entry, "auto") == "is missing"


def test_big_untouched_file_gets_the_sampled_hash_only(tmp_path, monkeypatch):
    """auto: a big file with the build's inode + mtime is checked by sample; touched or 'always': full hash."""
    monkeypatch.setattr(files, "FULL_HASH_MAX_BYTES", 1 << 20)
    path = tmp_path / "ann_hnsw.20240101000000-0123abcd.bin"
    path.write_bytes(os.urandom(6 << 20))
    entry = describe_file(path)
    ranges = files._sample_ranges(entry.size)  # a byte outside every sampled range:
    offset = next(o for o in range(1 << 20, entry.size, 997) if not any(a <= o < a + n for a, n in ranges))
    _flip(path, offset)
    os.utime(path, ns=(entry.mtime_ns, entry.mtime_ns))  # "untouched": same inode, size, mtime
    assert file_problem(path, entry, "auto") is None  # the documented trade-off
    assert file_problem(path, entry, "sampled") is None
    assert "checksum mismatch" in file_problem(path, entry, "always")
    os.utime(path, ns=(entry.mtime_ns + 10**9, entry.mtime_ns + 10**9))
    assert "checksum mismatch" in file_problem(path, entry, "auto")


def test_write_atomically_cleans_up_on_failure(tmp_path):
    target = tmp_path / "ann_hnsw.x.bin"

    def fail(tmp):
        tmp.write_bytes(b"partial")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_atomically(target, fail)
    assert list(tmp_path.iterdir()) == []
    write_atomically(target, lambda tmp: tmp.write_bytes(b"whole"))
    assert target.read_bytes() == b"whole" and [p.name for p in tmp_path.iterdir()] == [target.name]


def test_sweep_removes_only_our_leftovers(tmp_path):
    layout = Layout.of(tmp_path)
    keep = f"ann_hnsw.{new_build_id()}.bin"
    orphan = f"ann_hnsw.{new_build_id()}.bin"
    names = [keep, orphan, "ann.json.k2j3.tmp", f"{orphan}.abc123.tmp", "ann_hnsw.bin.x.tmp",  # ours
             "ann.json", "images.db", "ann_notes.txt", "annotations.csv", "ann_hnsw.bin", "ann_hnsw.json"]
    for name in names:
        (tmp_path / name).write_text("x")
    (tmp_path / "ann_hnsw.20240101000000-0123abcd.dir").mkdir()  # not a file: left alone
    removed = sweep(layout, keep={keep})
    assert sorted(removed) == sorted([orphan, "ann.json.k2j3.tmp", f"{orphan}.abc123.tmp", "ann_hnsw.bin.x.tmp"])
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {keep, "ann.json", "images.db", "ann_notes.txt", "annotations.csv", "ann_hnsw.bin", "ann_hnsw.json",
                    "ann_hnsw.20240101000000-0123abcd.dir"}
    assert sorted(sweep(layout, keep={keep}, legacy=True)) == ["ann_hnsw.bin", "ann_hnsw.json"]
    assert sweep(Layout.of(tmp_path / "absent"), keep=()) == []
