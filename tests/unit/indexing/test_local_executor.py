"""LocalExecutor: crash isolation with a job function that really kills its worker, bounded lazy
submission, inline mode, and Ctrl-C-style early close."""

from __future__ import annotations

import os

import pytest

from imagerec.indexing.executors import DECODER_CRASH, Executor, LocalExecutor


def crash_on_marked(job: list[int], marked: int) -> list[tuple[str, int, int]]:
    """Module level, so spawned workers can import it: ``os._exit`` (no cleanup, like a segfault) on ``marked``."""
    out = []
    for item in job:
        if item == marked:
            os._exit(3)
        out.append(("ok", item, os.getpid()))
    return out


def on_crash(item: int) -> tuple[str, int, int]:
    return (DECODER_CRASH, item, 0)


def _jobs(n: int, size: int) -> list[list[int]]:
    return [list(range(i, min(i + size, n))) for i in range(0, n, size)]


def test_a_crashing_item_costs_one_result_and_the_others_succeed():
    executor = LocalExecutor(2, max_in_flight=3)
    assert isinstance(executor, Executor)
    results = [r for job in executor.map(_jobs(20, 4), crash_on_marked, 7, on_crash=on_crash) for r in job]
    assert sorted(item for _, item, _ in results) == list(range(20))  # every item exactly once
    crashed = [r for r in results if r[0] != "ok"]
    assert crashed == [(DECODER_CRASH, 7, 0)]
    assert {pid for status, _, pid in results if status == "ok"}.isdisjoint({os.getpid(), 0})  # ran in workers


def test_nothing_crashes_nothing_is_retried():
    executor = LocalExecutor(2)
    per_job = list(executor.map(_jobs(10, 3), crash_on_marked, -1, on_crash=on_crash))
    assert sorted(len(job) for job in per_job) == [1, 3, 3, 3]  # whole jobs: no item was retried alone
    assert sorted(item for job in per_job for _, item, _ in job) == list(range(10))


def test_jobs_are_pulled_lazily_and_closing_stops_the_workers():
    pulled = []

    def jobs():
        for job in _jobs(40, 2):
            pulled.append(job)
            yield job

    results = LocalExecutor(1, max_in_flight=2).map(jobs(), crash_on_marked, -1, on_crash=on_crash)
    assert pulled == []  # nothing starts before the first result is asked for
    first = next(results)
    assert len(first) == 2 and 2 <= len(pulled) <= 3
    results.close()
    assert len(pulled) <= 3
    with pytest.raises(StopIteration):
        next(results)


def test_inline_runs_in_this_process_and_only_with_one_worker():
    inline = LocalExecutor(1, inline=True)
    results = [r for job in inline.map(_jobs(5, 2), crash_on_marked, -1, on_crash=on_crash) for r in job]
    assert [item for _, item, _ in results] == list(range(5))
    assert {pid for _, _, pid in results} == {os.getpid()}
    assert LocalExecutor(1, inline=True).inline and not LocalExecutor(2, inline=True).inline
    assert not LocalExecutor(1).inline  # by default even one worker is a separate, crash-isolated process
