"""Progress bars for the terminal, driven by the library's ``ProgressEvent`` callbacks."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager



class EventBar:
    """A ``ProgressCallback`` drawing a tqdm bar per stage: a new bar whenever the event's stage changes."""

    def __init__(self, unit: str):
        self.unit = unit
        self.bar = None
        self.stage: str | None = None

    def __call__(self, event) -> None:
        from tqdm import tqdm

        if event.stage != self.stage:
            self.close()
            self.stage = event.stage
            self.bar = tqdm(unit=self.unit, dynamic_ncols=True, desc=event.stage, total=event.total, smoothing=0.1)
        self.bar.total = event.total
        self.bar.update(event.done - self.bar.n)
        shown = {k: v for k, v in event.counters.items() if v}
        if shown:
            self.bar.set_postfix(shown, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@contextmanager
def progress_bar(unit: str, enabled: bool = True) -> Iterator[EventBar | None]:
    """An ``EventBar`` while the block runs (None when disabled or stderr is not a terminal); closed after."""
    bar = EventBar(unit) if enabled and sys.stderr.isatty() else None
    try:
        yield bar
    finally:
        if bar is not None:
            bar.close()


def bar_safe_echo(line: str) -> None:
    """Print a line above the progress bars instead of through them."""
    from tqdm import tqdm

    tqdm.write(line)
