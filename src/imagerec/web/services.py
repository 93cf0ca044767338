"""What the web app shares between requests: store readers, the reloading recommender, thumbnails, uploads.

A new ``build-ann`` is picked up without a restart: before each search the ANN manifest's (inode,
mtime) is compared with the one the recommender was opened after; when it changed, the collection
retires its recommender (threads still using it finish on it) and the next search opens a new one.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

from imagerec.errors import StoreError
from imagerec.search.fusion import QueryImage
from imagerec.store import StoreReaders
from imagerec.data.thumbnails import Thumbnails

UPLOAD_CACHE = 64  # uploaded query images kept (features only) so sliders re-rank without re-uploading


class Services:
    """Per-app state; every method may be called from any request thread."""

    def __init__(self, collection):
        self.collection = collection
        self.config = collection.config
        self.layout = collection.layout
        self.image_root = Path(self.config.data.image_root)
        web, index = self.config.web, self.config.index
        self.thumbnails = Thumbnails(self.layout.thumbs_dir, index.formats, index.max_image_pixels, web.thumbnail_sizes)
        self._lock = threading.Lock()
        self._readers: StoreReaders | None = None
        self._ann_signature = self._signature()
        self._uploads: OrderedDict[str, tuple[list[str], list[QueryImage]]] = OrderedDict()

    def store(self):
        """This thread's read-only store connection (StoreError while there is no database yet)."""
        with self._lock:
            if self._readers is None:
                if not self.layout.db.exists():
                    raise StoreError(f"{self.layout.db}: no database yet; run 'imagerec --config FILE index' first")
                self._readers = StoreReaders(self.layout.db)
            readers = self._readers
        return readers.get()

    def _signature(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.layout.ann_manifest)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns

    def recommender(self):
        """The collection's recommender, reopened when ``build-ann`` replaced the index since it opened."""
        signature = self._signature()  # taken before opening: a build finishing meanwhile triggers one more reopen
        with self._lock:
            if signature != self._ann_signature:
                self.collection.reopen()
                self._ann_signature = signature
        return self.collection.recommender()

    def remember(self, names: Sequence[str], queries: Sequence[QueryImage]) -> str:
        """A token for re-ranking these uploaded query images (named as uploaded) later."""
        token = secrets.token_urlsafe(12)
        with self._lock:
            self._uploads[token] = (list(names), list(queries))
            while len(self._uploads) > UPLOAD_CACHE:
                self._uploads.popitem(last=False)
        return token

    def recall(self, token: str) -> tuple[list[str], list[QueryImage]] | None:
        """(names, query images) of an earlier upload, None once forgotten."""
        with self._lock:
            queries = self._uploads.get(token)
            if queries is not None:
                self._uploads.move_to_end(token)
            return queries

    def close(self) -> None:
        with self._lock:
            readers, self._readers = self._readers, None
        if readers is not None:
            readers.close()
