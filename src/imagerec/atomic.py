"""Atomic file replacement: write a temporary file beside the target, fsync it, rename it over the target.

A crash or kill at any moment leaves either the old file or the new one, never a mix. Temporary files
are named ``<target name>.<random>.tmp`` and removed on failure.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


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
def atomic_write(target: Path, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """``with atomic_write(path) as fh: fh.write(...)``: ``path`` is replaced only if the block succeeds."""
    target = Path(target)
    tmp = temp_path(target)
    try:
        with open(tmp, mode, encoding=encoding) as fh:
            yield fh
        commit(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
