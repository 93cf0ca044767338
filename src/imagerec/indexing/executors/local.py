"""``LocalExecutor``: jobs in a pool of spawned worker processes on this machine, crashes isolated.

* At most ``max_in_flight`` jobs are submitted at a time; ``jobs`` is pulled only as they finish.
* Workers ignore SIGINT from their first instruction on (Ctrl-C reaches the whole process group;
  the parent alone decides how to stop): they are created with SIGINT blocked and ignore it in
  their initializer, so a Ctrl-C while they import prints nothing. They die with the parent (``procs.die_with_parent``), send fd 2 to
  /dev/null (C decoders such as libtiff print warnings there; failures are results instead) and, with ``yield_cpu``, run at idle priority so a CPU
  model keeps its cores.
* A worker that dies (a segfault in a C decoder) breaks the pool: it is rebuilt and the lost items
  are retried one at a time; the item that kills a worker again gets ``on_crash(item)``.
* Before blaming items, a fresh pool must run a trivial task: workers that die on start-up whatever
  the job (a script without a ``__main__`` guard) are an ``ImagerecError``, not broken images.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import TypeVar

from imagerec.errors import ImagerecError
from imagerec.procs import die_with_parent, ignore_sigint, sigint_blocked_for_children

T = TypeVar("T")
S = TypeVar("S")
R = TypeVar("R")


class LocalExecutor:
    """Runs jobs in ``workers`` spawned processes (an ``Executor``; see ``executors.base``).

    ``inline=True`` with one worker runs the jobs in this process instead: no start-up cost, but no
    crash isolation and no worker set-up (for small jobs, tests and profiling).
    """

    def __init__(self, workers: int, *, max_in_flight: int | None = None, yield_cpu: bool = False, inline: bool = False):
        self.workers = max(1, workers)
        self.max_in_flight = max(1, max_in_flight or 2 * self.workers)
        self.yield_cpu = yield_cpu
        self.inline = inline and self.workers == 1

    def map(
        self, jobs: Iterable[list[T]], fn: Callable[[list[T], S], list[R]], settings: S, *, on_crash: Callable[[T], R]
    ) -> Generator[list[R], None, None]:
        """Yield ``fn(job, settings)`` per job as jobs finish; ``[on_crash(item)]`` for an item that kills a worker twice."""
        if self.inline:
            return (fn(job, settings) for job in jobs)
        return self._pooled(iter(jobs), fn, settings, on_crash)

    def _pooled(self, jobs: Iterator[list[T]], fn, settings, on_crash) -> Generator[list[R], None, None]:
        suspects: list[T] = []  # items lost with a broken pool, each retried alone
        while True:
            pool = ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"), initializer=_worker_init,
                                       initargs=(self.yield_cpu, os.getpid()))
            in_flight: dict[Future, list[T]] = {}
            isolated: set[Future] = set()  # the suspect running alone, if any
            try:
                if suspects:
                    _check_workers_start(pool)
                while True:
                    self._submit(pool, jobs, suspects, in_flight, isolated, fn, settings)
                    if not in_flight:
                        return
                    done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                    for future in done:
                        results = future.result()
                        del in_flight[future]
                        isolated.discard(future)
                        yield results
            except BrokenProcessPool:
                lost = [item for job in in_flight.values() for item in job]
                if len(lost) == 1 and isolated:
                    yield [on_crash(lost[0])]
                else:
                    suspects.extend(reversed(lost))  # popped from the end: retried in their original order
            finally:
                pool.shutdown(wait=True, cancel_futures=True)

    def _submit(self, pool, jobs, suspects, in_flight, isolated, fn, settings) -> None:
        """Top up the pool: suspects one at a time and alone, otherwise up to ``max_in_flight`` jobs."""
        while len(in_flight) < (1 if suspects or isolated else self.max_in_flight):
            retry = bool(suspects)
            job = [suspects.pop()] if retry else next(jobs, None)
            if job is None:
                return
            with sigint_blocked_for_children():  # submit is where the pool spawns its workers
                future = pool.submit(fn, job, settings)
            in_flight[future] = job
            if retry:
                isolated.add(future)


def _check_workers_start(pool: ProcessPoolExecutor) -> None:
    """Before blaming items for a broken pool: can a fresh worker run anything at all?"""
    try:
        with sigint_blocked_for_children():
            future = pool.submit(os.getpid)
        future.result()
    except BrokenProcessPool:
        raise ImagerecError(
            "image decoding worker processes die on start-up, whatever the image; in a script, put the code "
            "that calls imagerec under \"if __name__ == '__main__':\" (workers are spawned, not forked)"
        ) from None


def _worker_init(yield_cpu: bool, parent_pid: int) -> None:
    ignore_sigint()  # Ctrl-C goes to the whole process group; the parent alone decides how to stop
    die_with_parent(parent_pid)
    if yield_cpu:
        # The CPU model is the bottleneck and its threads stall when decoders preempt them: decode in the
        # cycles the model leaves idle instead (SCHED_IDLE on Linux, the lowest nice level elsewhere).
        if hasattr(os, "SCHED_IDLE"):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        else:
            os.nice(19)
    # C decoders (libtiff) print warnings straight to fd 2; failures are recorded as results instead.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
