"""Thumbnails made on demand, cached on disk under ``output.dir/cache/thumbs/`` by id + size + file mtime.

Nothing is thumbnailed up front: a 550k collection costs only the thumbnails somebody looked at (in
``serve``) or that ``query``'s same-photo check compared. A file that changed gets a new key (its mtime
is in the name), so a stale thumbnail is never served.
The original is decoded with the safe loader ``index`` uses (allow-list, pixel limit, JPEG draft).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from imagerec.data import loading
from imagerec.errors import ImageLoadError

JPEG_QUALITY = 85


@dataclass(frozen=True, slots=True)
class Thumbnail:
    path: Path
    etag: str
    made: bool  # False: served from the cache


class Thumbnails:
    """The thumbnail cache of one collection."""

    def __init__(self, cache_dir: Path, formats: tuple[str, ...], max_pixels: int, sizes: tuple[int, ...]):
        self.cache_dir = Path(cache_dir)
        self.formats, self.max_pixels = formats, max_pixels
        self.sizes = tuple(sorted(set(sizes)))

    def size_for(self, requested: int | None) -> int:
        """The smallest configured size that covers ``requested`` (the largest if none does)."""
        if requested is None:
            return self.sizes[0]
        return next((s for s in self.sizes if s >= requested), self.sizes[-1])

    def get(self, image_id: int, source: Path, size: int) -> Thumbnail:
        """The thumbnail file of ``source`` (image ``image_id``) at ``size``, made now if not cached.

        Raises ``ImageLoadError`` when the file can no longer be decoded.
        """
        target, key = self._target(image_id, source, size)
        if target.exists():
            return Thumbnail(target, f'"{key}"', made=False)
        self._publish(self._make(source, size), target, key)
        return Thumbnail(target, f'"{key}"', made=True)

    def image(self, image_id: int, source: Path, size: int) -> Image.Image:
        """The thumbnail as an image, as cached (so a first and a later call give the same pixels); where
        the cache cannot be written or read, the thumbnail made now.

        Raises ``ImageLoadError`` when the file can no longer be decoded.
        """
        target, key = self._target(image_id, source, size)
        made = None
        if not target.exists():
            made = self._make(source, size)
            try:
                self._publish(made, target, key)
            except OSError:  # a read-only or full cache: the caller still gets its thumbnail
                return made
        try:
            with Image.open(target) as cached:
                cached.load()
                return cached
        except OSError:
            return made if made is not None else self._make(source, size)

    def _target(self, image_id: int, source: Path, size: int) -> tuple[Path, str]:
        try:
            mtime_ns = os.stat(source).st_mtime_ns
        except OSError as exc:
            raise ImageLoadError(loading.VANISHED, f"{source}: {exc.strerror}") from None
        key = f"{image_id}-{size}-{mtime_ns}"
        return self.cache_dir / f"{image_id % 256:02x}" / f"{key}.jpg", key

    def _make(self, source: Path, size: int) -> Image.Image:
        image = loading.load_path(source, loading.LoadSettings(self.formats, self.max_pixels, size)).image
        image.thumbnail((size, size))
        return image

    @staticmethod
    def _publish(image: Image.Image, target: Path, key: str) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        # temp file + rename: concurrent requests for one thumbnail each publish a whole file. No fsync:
        # the cache is rebuildable, and a miss must stay fast
        fd, tmp = tempfile.mkstemp(prefix=f"{key}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                image.save(fh, "JPEG", quality=JPEG_QUALITY)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
