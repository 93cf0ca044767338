"""The collection's writer lock: one ``index`` at a time per ``output.dir``; readers never take it.

An advisory ``flock`` on ``layout.index_lock``, released by the kernel when the process ends however it
ends (so a killed run never leaves a stale lock). The holder writes its pid into the file for the message
a second writer gets; that second writer exits at once rather than wait (it would find nothing left to do).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from imagerec.errors import StoreError


class WriterBusy(StoreError):
    """Another process holds the collection's writer lock."""


@contextmanager
def writer_lock(path: Path, what: str = "index") -> Iterator[None]:
    """Hold the writer lock at ``path`` for the block; ``WriterBusy`` naming the holder's pid if another has it."""
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        # A spawned worker re-running an unguarded script: die as multiprocessing itself would, so the parent
        # reports the missing __main__ guard (a WriterBusy here could be caught and the worker live on).
        raise RuntimeError("imagerec called while a worker process starts; guard the script with "
                           "if __name__ == '__main__':")
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: SQLite's own locking still keeps the data consistent
        yield
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as exc:
        raise StoreError(f"{path}: cannot create the writer lock ({exc.strerror or exc}); check {path.parent}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise WriterBusy(f"{path.parent}: another {what} is running (pid {holder}); "
                             f"wait for it to finish, then re-run (queries and status work meanwhile)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
