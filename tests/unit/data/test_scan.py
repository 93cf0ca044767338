"""scan.scan_images on real trees: order, what is passed over and counted, symlinks, odd names, laziness."""

from __future__ import annotations

import inspect
import itertools
import os
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path


from imagerec.config import load_config
from imagerec.indexing.run import index_collection
from imagerec.data.scan import ScanStats, scan_images
from imagerec.store import Store


def _scan(root: Path, **kwargs) -> tuple[list[bytes], ScanStats]:
    stats = ScanStats()
    paths = [f.rel_path for f in itertools.islice(scan_images(root, stats=stats, **kwargs), 10_000)]
    assert len(paths) < 10_000, "scan did not terminate"
    return paths, stats


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_order_is_sorted_per_folder_and_independent_of_creation_order(tmp_path):
    names = ["b.jpg", "a.png", "B.gif", "sub/z.jpg", "sub/c.jpg", "sub/deeper/m.bmp", "a_dir/x.webp", "c.tif"]
    trees = []
    for tree, order in (("one", names), ("two", list(reversed(names)))):
        for i, name in enumerate(order):
            _touch(tmp_path / tree / name, b"x" * (i + 1))
        trees.append(tmp_path / tree)
    first, _ = _scan(trees[0])
    assert first == _scan(trees[0])[0] == _scan(trees[1])[0]  # stable, whatever the creation order
    assert set(first) == {n.encode() for n in names}
    by_folder: dict[bytes, list[bytes]] = {}
    for rel in first:
        folder, _, name = rel.rpartition(b"/")
        by_folder.setdefault(folder, []).append(name)
    assert all(names == sorted(names) for names in by_folder.values())
    for scanned in scan_images(trees[0]):  # size and mtime are the file's own
        st = os.stat(trees[0] / os.fsdecode(scanned.rel_path))
        assert (scanned.size, scanned.mtime_ns) == (st.st_size, st.st_mtime_ns)


def test_hidden_entries_are_skipped_and_counted(tmp_path):
    for name in [".DS_Store", "._photo.jpg", ".hidden/inside.jpg", ".git/objects/x.png", "photo.jpg", "sub/._x.jpg"]:
        _touch(tmp_path / name)
    paths, stats = _scan(tmp_path)
    assert paths == [b"photo.jpg"]
    assert stats.hidden == 5  # .DS_Store, ._photo.jpg, .hidden/, .git/, sub/._x.jpg (folders count once)


def test_non_image_extensions_are_counted_not_yielded(tmp_path):
    for name in ["notes.txt", "data.json", "README", "doc.pdf", "PHOTO.JPG", "pic.jpeg", "scan.tif", "raster.j2k", "multi.mpo"]:
        _touch(tmp_path / name)
    stats = ScanStats()
    found = {f.rel_path: f.format_hint for f in scan_images(tmp_path, stats=stats)}
    # PDF is write-only in Pillow; .j2k is yielded so the indexer can record it as format_not_allowed
    assert found == {b"PHOTO.JPG": "JPEG", b"pic.jpeg": "JPEG", b"scan.tif": "TIFF", b"raster.j2k": "JPEG2000", b"multi.mpo": "JPEG"}
    assert stats.non_image_files == 3 and stats.no_extension == 1  # README: counted apart, it may be a photo


def test_fifo_and_socket_are_counted_as_special(tmp_path):
    _touch(tmp_path / "real.jpg")
    os.mkfifo(tmp_path / "fifo.jpg")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(tmp_path / "sock.png"))
        paths, stats = _scan(tmp_path)
    finally:
        sock.close()
    assert paths == [b"real.jpg"]
    assert stats.special_files == 2


def test_symlink_loops_terminate_and_each_real_file_is_yielded_once(tmp_path):
    root = tmp_path / "root"
    for name in ["a/one.jpg", "a/inner/two.png", "c/three.gif"]:
        _touch(root / name)
    os.symlink("..", root / "a" / "up")  # a/up -> root: a loop
    os.symlink(".", root / "a" / "inner" / "here")  # a folder linking to itself
    os.symlink("a", root / "b")  # a second way into a/
    os.symlink("self.jpg", root / "self.jpg")  # ELOOP
    os.symlink("ping.jpg", root / "pong.jpg")
    os.symlink("pong.jpg", root / "ping.jpg")
    paths, stats = _scan(root, follow_symlinks=True)
    real = [os.stat(root / os.fsdecode(p)) for p in paths]
    assert len({(st.st_dev, st.st_ino) for st in real}) == len(paths) == 3
    assert {os.path.basename(p) for p in paths} == {b"one.jpg", b"two.png", b"three.gif"}
    assert stats.special_files == 3  # the three unresolvable links


def test_symlinks_are_ignored_by_default(tmp_path):
    root = tmp_path / "root"
    _touch(root / "a" / "one.jpg")
    os.symlink("a", root / "b")
    os.symlink("a/one.jpg", root / "alias.jpg")
    os.symlink("missing.jpg", root / "dangling.jpg")
    paths, stats = _scan(root)
    assert paths == [b"a/one.jpg"]
    assert stats.symlinks == 3


def test_symlink_out_of_the_root_is_followed_only_when_asked(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    _touch(root / "in.jpg")
    _touch(outside / "o.jpg")
    os.symlink(outside, root / "out")
    os.symlink(outside / "o.jpg", root / "out_file.jpg")
    assert _scan(root)[0] == [b"in.jpg"]
    assert set(_scan(root, follow_symlinks=True)[0]) == {b"in.jpg", b"out/o.jpg", b"out_file.jpg"}


ODD_NAMES = [b"caf\xe9.jpg", b"line\nbreak.png", b"dossier\xff/na\xefve.gif", "日本.jpg".encode(), b"sp ace?#%.jpg"]


def test_odd_file_names_are_scanned_indexed_and_round_trip(tmp_path, make_image, write_config):
    root = tmp_path / "images"
    root.mkdir()
    broot = os.fsencode(root)
    for i, name in enumerate(ODD_NAMES):
        folder = os.path.dirname(os.path.join(broot, name))
        os.makedirs(folder, exist_ok=True)
        fmt = {b".jpg": "JPEG", b".png": "PNG", b".gif": "GIF"}[os.path.splitext(name)[1]]
        tmp = make_image(root / f"tmp{i}", fmt=fmt, seed=i)
        os.rename(tmp, os.path.join(broot, name))
    os.mkfifo(root / "x.jpg")  # must not block the indexer either

    paths, stats = _scan(root)
    assert sorted(paths) == sorted(ODD_NAMES)
    assert stats.special_files == 1

    out = tmp_path / "out"
    summary = index_collection(load_config(write_config(root, out)))
    assert summary.indexed == len(ODD_NAMES) and not summary.skipped
    with Store(out / "images.db") as store:
        ids = {name: store.find_by_path(name) for name in ODD_NAMES}
        assert all(ids.values())
        rows = store.get_images(list(ids.values()))
    assert {row.id: row.path for row in rows} == {i: name for name, i in ids.items()}
    db = sqlite3.connect(out / "images.db")
    try:
        stored = {row[0] for row in db.execute("SELECT path FROM images")}
        assert all(type(p) is bytes for p in stored) and stored == set(ODD_NAMES)
    finally:
        db.close()
    for name in stored:  # the stored bytes open the very file
        assert os.path.isfile(os.path.join(broot, name))


def test_scan_is_a_lazy_generator(tmp_path):
    for i in range(60):
        _touch(tmp_path / f"d{i:03}" / "a.txt")
        _touch(tmp_path / f"d{i:03}" / "b.jpg")
    stats = ScanStats()
    it = scan_images(tmp_path, stats=stats)
    assert isinstance(it, Iterator) and inspect.isgenerator(it)
    assert stats.non_image_files == 0  # nothing listed before the first next()
    assert next(it).rel_path == b"d000/b.jpg"
    assert stats.non_image_files == 1  # only the first folder has been listed so far
    assert sum(1 for _ in it) == 59
    assert stats.non_image_files == 60
