"""Read-only connections to one database, one per thread, so any number of threads read their own snapshot."""

from __future__ import annotations

import threading
from pathlib import Path

from imagerec.errors import StoreError
from imagerec.store.sqlite import Store


class StoreReaders:
    """Read-only connections to one database, one per thread, opened on first use; ``close()`` closes all."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[Store] = []
        self._closed = False
        self.get()  # fail now, in the caller's thread, if the database cannot be opened

    def get(self) -> Store:
        """This thread's connection."""
        store = getattr(self._local, "store", None)
        if store is None:
            with self._lock:
                if self._closed:
                    raise StoreError(f"{self.path}: the collection was closed")
                store = Store(self.path, readonly=True)
                self._all.append(store)
            self._local.store = store
        return store

    def close(self) -> None:
        with self._lock:
            self._closed = True
            stores, self._all = self._all, []
        for store in stores:
            store.close()
