"""Process hygiene: workers that start deaf to Ctrl-C and die with their parent, and deferred Ctrl-C.

* ``sigint_blocked_for_children()``: around process creation in the parent. The signal mask survives
  ``fork`` and ``exec``, so a spawned worker starts with SIGINT blocked and a Ctrl-C during its
  imports stays pending instead of printing a traceback; ``ignore_sigint()`` (its initializer) then
  ignores and unblocks it. The parent's Ctrl-C is never lost: another thread takes it, or it waits
  until the block ends. (Ignoring it in the parent instead would drop a Ctrl-C in that window.)
* ``die_with_parent(parent_pid)``: in a worker, ``PR_SET_PDEATHSIG`` on Linux plus a thread that
  watches the parent pid (the only mechanism elsewhere).
* ``deferred_sigint()``: a Ctrl-C inside the block is honoured only when the block ends (saves).
* ``ack_sigint(message)``: acknowledge Ctrl-C on stderr at once, then raise KeyboardInterrupt.
* ``exit_status_kept()``: after a handled Ctrl-C, keep CPython from ending the process by SIGINT.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_PR_SET_PDEATHSIG = 1
_WATCH_S = 0.5


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def sigint_blocked_for_children() -> Iterator[None]:
    """Processes created inside the block start with SIGINT blocked (see the module docstring).

    The parent's own Ctrl-C handler is deferred too: a KeyboardInterrupt half-way through launching a
    worker would leave it reading a truncated start-up message (an EOFError traceback).
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        with deferred_sigint():
            yield
    finally:
        if signal.SIGINT not in previous:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def ignore_sigint() -> None:
    """In a worker: ignore SIGINT, then unblock it (a Ctrl-C that came during start-up is dropped)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def die_with_parent(parent_pid: int) -> None:
    """Make this process exit when ``parent_pid`` dies (call first thing in a worker)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True, name="imagerec-parent-watch").start()


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(_WATCH_S)
    os._exit(1)


@contextmanager
def deferred_sigint() -> Iterator[None]:
    """Ctrl-C inside the block is held back and honoured (by the previous handler) when the block ends."""
    if not _main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        if callable(previous):
            previous(signal.SIGINT, None)
        elif previous != signal.SIG_IGN:
            raise KeyboardInterrupt


def exit_status_kept() -> None:
    """Forget CPython's mark that a KeyboardInterrupt escaped an ``exec``/``eval`` of source text.

    CPython sets that mark even when the interrupt is caught further up (a Ctrl-C landing while an
    import creates a dataclass or namedtuple does this), and an interpreter that ends with the mark
    set kills itself with SIGINT: the shell sees "killed by signal 2", not our exit status 130.
    Every ``exec`` of source text clears the mark before it runs, so an empty one resets it.
    """
    exec("")  # noqa: S102 - the reset described above


def say_now(message: str) -> None:
    """Write one line to fd 2 unbuffered: safe inside a signal handler, even while stderr is mid-write."""
    try:
        os.write(2, (message.rstrip("\n") + "\n").encode(errors="replace"))
    except OSError:
        pass


_acknowledged: list[bool] = []


def interrupt_acknowledged() -> bool:
    """True once an ``ack_sigint`` handler saw Ctrl-C (its KeyboardInterrupt may have been swallowed by a finaliser)."""
    return bool(_acknowledged)


def forget_interrupt() -> None:
    """Reset ``interrupt_acknowledged`` (when a command that installed ``ack_sigint`` ends)."""
    _acknowledged.clear()


def ack_sigint(message: str) -> Callable[[int, object], None]:
    """A SIGINT handler that says ``message`` once at once, then raises KeyboardInterrupt like the default."""
    forget_interrupt()

    def handler(signum, frame) -> None:
        if not _acknowledged:
            _acknowledged.append(True)
            say_now(message)
        raise KeyboardInterrupt

    return handler
