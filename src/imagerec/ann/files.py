"""The files of an ANN index: checksums, verification, atomic writing and the clean-up of leftovers.

Every index file has a build-unique name ``ann_<kind>.<build id><suffix>`` and is written through a
temporary ``<name>.<random>.tmp`` (fsync, rename, fsync folder). Only the manifest (``ann.json``)
says which files form the index, so files of an unfinished build are never read, and ``sweep``
removes them (and our temporaries) later.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from imagerec.ann.base import AnnIndexError
from imagerec.atomic import commit, fsync_dir, temp_path
from imagerec.layout import Layout

FULL_HASH_MAX_BYTES = 64 << 20
_SAMPLE_BLOCK = 4096
_SAMPLE_BLOCKS = 256
_EDGE_BYTES = 1 << 20
LEGACY_FILES = ("ann_hnsw.bin", "ann_hnsw.json")  # imagerec before the manifest (format_version 1)
_BUILD_FILE = re.compile(r"^ann_[a-z0-9]+\.\d{14}-[0-9a-f]{8}(\.[A-Za-z0-9]+)+$")
_TEMP_GLOB = "ann*.tmp"


@dataclass(frozen=True)
class AnnFile:
    """One file of an index, as it was right after the build wrote it."""

    name: str  # inside output.dir
    size: int
    sha256: str
    sample_sha256: str
    inode: int
    mtime_ns: int


def new_build_id(now: float | None = None) -> str:
    """``YYYYmmddHHMMSS-<8 hex>``: sortable, unique per build."""
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(time.time() if now is None else now))
    return f"{stamp}-{secrets.token_hex(4)}"


def file_hashes(path: Path, *, sample_only: bool = False) -> tuple[str | None, str]:
    """(sha256 of the whole file or None, sha256 of head + tail + evenly spaced 4 KiB blocks)."""
    size = path.stat().st_size
    full = None if sample_only else hashlib.sha256()
    sample = hashlib.sha256()
    with open(path, "rb") as fh:
        if full is not None:
            while chunk := fh.read(8 << 20):
                full.update(chunk)
        for offset, length in _sample_ranges(size):
            fh.seek(offset)
            sample.update(fh.read(length))
    return (None if full is None else full.hexdigest()), sample.hexdigest()


def _sample_ranges(size: int) -> list[tuple[int, int]]:
    if size <= 2 * _EDGE_BYTES + _SAMPLE_BLOCK * _SAMPLE_BLOCKS:
        return [(0, size)]
    ranges = [(0, _EDGE_BYTES), (size - _EDGE_BYTES, _EDGE_BYTES)]
    step = (size - 2 * _EDGE_BYTES) // _SAMPLE_BLOCKS
    ranges += [(_EDGE_BYTES + i * step, _SAMPLE_BLOCK) for i in range(_SAMPLE_BLOCKS)]
    return ranges


def describe_file(path: Path) -> AnnFile:
    """The manifest entry of a freshly written (and renamed: inode and mtime are kept) file."""
    full, sample = file_hashes(path)
    st = path.stat()
    return AnnFile(path.name, st.st_size, full or "", sample, st.st_ino, st.st_mtime_ns)


def file_problem(path: Path, entry: AnnFile, mode: str) -> str | None:
    """What is wrong with ``path`` compared to ``entry`` (None: nothing).

    ``mode``: "sampled" checks size + sampled hash (cheap, for status); "always" adds the full hash;
    "auto" skips the full hash only for a big file untouched since the build (same inode and mtime).
    """
    try:
        st = path.stat()
        if st.st_size != entry.size:
            return f"is {st.st_size} bytes, expected {entry.size} (truncated or replaced)"
        untouched = (st.st_ino, st.st_mtime_ns) == (entry.inode, entry.mtime_ns)
        sample_only = mode == "sampled" or (mode == "auto" and untouched and st.st_size > FULL_HASH_MAX_BYTES)
        full, sample = file_hashes(path, sample_only=sample_only)
    except FileNotFoundError:
        return "is missing"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if sample != entry.sample_sha256 or (full is not None and full != entry.sha256):
        return "checksum mismatch (file corrupted or replaced)"
    return None


def write_atomically(target: Path, writer: Callable[[Path], None]) -> Path:
    """``writer(tmp)`` fills a temporary file beside ``target``; then fsync + rename onto ``target``."""
    tmp = temp_path(target)
    try:
        writer(tmp)
        commit(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def sweep(layout: Layout, keep: Iterable[str], *, legacy: bool = False) -> list[str]:
    """Remove our temporaries (``ann*.tmp``) and build files not in ``keep`` (+ the legacy files).

    Best effort: a file that cannot be removed stays (it is unreferenced, hence harmless). Returns the
    names removed.
    """
    keep = set(keep)
    root = layout.root
    if not root.is_dir():
        return []
    victims = [p for p in root.glob(_TEMP_GLOB)]
    victims += [p for p in root.iterdir() if _BUILD_FILE.match(p.name) and p.name not in keep]
    if legacy:
        victims += [layout.ann_file(name) for name in LEGACY_FILES if name not in keep]
    removed = []
    for path in victims:
        try:
            if path.is_file() and not path.is_symlink():
                path.unlink()
                removed.append(path.name)
        except OSError:
            pass
    return removed


@contextmanager
def build_lock(layout: Layout) -> Iterator[None]:
    """One build per collection: an advisory ``flock`` on ``layout.ann_lock`` (no-op where ``fcntl`` is missing).

    Without it a second build's clean-up could remove the first one's finished but not yet committed files.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    try:
        fh = open(layout.ann_lock, "a")
    except OSError as exc:
        raise AnnIndexError(f"{layout.root}: cannot write the ANN index ({exc.strerror or exc}); "
                            "the previous index is unchanged") from None
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AnnIndexError(f"{layout.root}: another 'build-ann' is running on this collection; "
                                "wait for it to finish") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def legacy_present(layout: Layout) -> bool:
    """Whether files of an index written by an older imagerec (no manifest) are there."""
    return any(layout.ann_file(name).exists() for name in LEGACY_FILES)


def fsync_removals(layout: Layout) -> None:
    """Make the removals of ``sweep`` durable (best effort)."""
    fsync_dir(layout.root)


def safe_name(name: object) -> bool:
    """A manifest may only name plain files directly inside output.dir."""
    return (isinstance(name, str) and 0 < len(name) <= 255 and name == os.path.basename(name)
            and name not in (".", "..") and "\\" not in name and "\x00" not in name and name.startswith("ann_"))
