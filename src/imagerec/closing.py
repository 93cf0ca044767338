"""``with Thing(...) as thing:`` for objects that hold resources and have a ``close()``."""

from __future__ import annotations

from typing import Self


class Closing:
    """Mixin: entering returns the object, leaving calls ``close()``."""

    def close(self) -> None:  # pragma: no cover - every user overrides it
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
