"""Atomic file replacement: write a temporary file beside the target, fsync it, rename it over the target.

A crash or kill at any moment leaves either the old file or the new one, never a mix. Temporary files
are named ``<target name>.<random>.tmp`` and removed on failure. ``held_temp`` keeps an ``flock`` on
its temporary while the writer runs, so ``remove_stale_temps`` (called by the command that writes the
target, before it writes) removes only temporaries whose writer is gone (killed), never a live one.
A full disk (or a file size limit) is a ``DiskFullError`` naming the target, the old file kept.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from imagerec.errors import DiskFullError

_DISK_FULL = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}
_TEMP_SUFFIX = re.compile(r"\.[A-Za-z0-9_]{8}\.tmp")  # what tempfile.mkstemp adds in temp_path
STALE_AFTER_S = 10.0  # a temporary this old and unlocked is a dead writer's, not one being created


def is_disk_full(exc: BaseException) -> bool:
    """True for the errors a full disk, a quota or a file size limit raise."""
    return isinstance(exc, OSError) and exc.errno in _DISK_FULL


def temp_path(target: Path) -> Path:
    """A new empty temporary file in ``target``'s folder, for writers that need a file name (FAISS, memmap)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
    os.close(fd)
    return Path(tmp)


def commit(tmp: Path, target: Path) -> None:
    """fsync ``tmp``, rename it over ``target``, fsync the folder (so the rename survives power loss)."""
    fsync_file(tmp)
    os.replace(tmp, target)
    fsync_dir(target.parent)


@contextmanager
def held_temp(target: Path) -> Iterator[Path]:
    """A temporary beside ``target``, locked for the block (so no cleaner removes it) and removed if it fails.

    Disk-full errors inside the block become ``DiskFullError(target)``.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
    tmp = Path(name)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield tmp
    except BaseException as exc:
        written = _size(tmp)
        tmp.unlink(missing_ok=True)
        if is_disk_full(exc):
            raise DiskFullError(target, written) from None
        raise
    finally:
        os.close(fd)


@contextmanager
def atomic_write(target: Path, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """``with atomic_write(path) as fh: fh.write(...)``: ``path`` is replaced only if the block succeeds."""
    target = Path(target)
    with held_temp(target) as tmp:
        with open(tmp, mode, encoding=encoding) as fh:
            yield fh
        commit(tmp, target)


def write_bytes_atomic(target: Path, data: bytes) -> None:
    """Replace ``target`` with ``data``; the space is reserved first, so a full disk fails before writing."""
    target = Path(target)
    with held_temp(target) as tmp:
        with open(tmp, "wb") as fh:
            reserve(fh.fileno(), len(data), target)
            fh.write(data)
        commit(tmp, target)


def reserve(fd: int, size: int, target: Path) -> None:
    """Allocate ``size`` bytes of ``fd`` now (``DiskFullError`` for ``target`` when there is no room)."""
    if size <= 0:
        return
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFullError(target, size) from None
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise


def remove_stale_temps(target: Path, min_age_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove ``<target name>.<random>.tmp`` files no live writer holds; returns what was removed.

    ``target``'s name may contain ``*`` (e.g. ``train_*.u8``). Files not of this naming are never touched.
    """
    target = Path(target)
    removed: list[Path] = []
    for path in target.parent.glob(target.name + ".*.tmp"):
        if _TEMP_SUFFIX.fullmatch(path.name[len(path.name) - 13:]) and _remove_if_stale(path, min_age_s):
            removed.append(path)
    return removed


def _remove_if_stale(path: Path, min_age_s: float) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        if not os.path.isfile(path) or time.time() - os.fstat(fd).st_mtime < min_age_s:
            return False
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held by a running writer: BlockingIOError
        path.unlink(missing_ok=True)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size or None
    except OSError:
        return None


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Best effort: some file systems refuse to fsync a folder."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
