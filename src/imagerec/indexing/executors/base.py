"""The executor seam: how decode jobs reach worker processes on this machine (a local process pool).

An executor runs ``fn(job, settings)`` for each job and yields each job's list of results as it
finishes (not necessarily in submission order), keeping only a bounded number of jobs in flight and
pulling ``jobs`` lazily. Results must identify their item themselves (the indexer's ``Decoded``
carries its ``WorkItem``). When an item kills the process running it, the executor retries the
lost items one at a time and yields ``[on_crash(item)]`` for the one that crashes again, so one bad
file costs one result. Closing the returned generator stops the workers.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from typing import Protocol, TypeVar, runtime_checkable

DECODER_CRASH = "decoder_crash"  # skip reason of an item whose worker died on it twice

T = TypeVar("T")  # an item of a job
S = TypeVar("S")  # the settings sent along with every job (picklable)
R = TypeVar("R")  # the result for one item


@runtime_checkable
class Executor(Protocol):
    """Runs jobs of items somewhere else, isolating crashes; see the module docstring."""

    def map(
        self,
        jobs: Iterable[list[T]],
        fn: Callable[[list[T], S], list[R]],
        settings: S,
        *,
        on_crash: Callable[[T], R],
    ) -> Generator[list[R], None, None]:
        """Yield ``fn(job, settings)`` for every job as it finishes; ``[on_crash(item)]`` for an item that kills its worker."""
        ...
