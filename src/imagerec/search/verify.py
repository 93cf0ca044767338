"""The query stage's same-photo tier: a query's source photo goes first even when the fused score does not say so.

An edited copy (cropped, rescaled, re-encoded) can rank second behind another shot of the same scene,
because the fused score measures likeness, not identity. For the ``top`` best fused candidates the
query's grey thumbnail is looked for inside the candidate's (``match.match_correlation``); candidates
reaching ``min_correlation`` move to the front, best match first, and the others keep their fused order.
Candidate thumbnails come from the collection's on-disk thumbnail cache (``output.dir/cache/thumbs/``,
shared with ``serve``), so a large photo is decoded once, not on every query; a file that is gone or
unreadable is simply not checked.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imagerec.data.thumbnails import Thumbnails
from imagerec.errors import ImageLoadError
from imagerec.search.fusion import QueryImage
from imagerec.search.match import THUMB_SIDE, grey_thumbnail, match_correlation
from imagerec.store.records import absolute_path


@dataclass(frozen=True, slots=True)
class SamePhotoSettings:
    """``query.same_photo_top`` candidates checked (0: off), ``query.same_photo_min_correlation`` to count."""

    top: int
    min_correlation: float


class SamePhotoTier:
    """Re-orders a fused ranking's head; holds no per-request state.

    ``thumbnails`` is the collection's thumbnail cache; the tier reads its smallest size covering ``THUMB_SIDE``.
    """

    def __init__(self, settings: SamePhotoSettings, image_root: Path, thumbnails: Thumbnails):
        self.settings = settings
        self.image_root = image_root
        self._thumbnails = thumbnails
        self._size = thumbnails.size_for(THUMB_SIDE)

    def thumbnail(self, image_id: int, rel_path: bytes) -> np.ndarray | None:
        """The grey thumbnail of collection image ``image_id`` (file ``rel_path``), or None when it cannot be read now."""
        source = Path(os.fsdecode(absolute_path(self.image_root, rel_path)))
        try:
            return grey_thumbnail(self._thumbnails.image(image_id, source, self._size))
        except (ImageLoadError, OSError):
            return None

    def reorder(self, queries: Sequence[QueryImage], order: np.ndarray, ids: np.ndarray,
                paths: Sequence[bytes]) -> tuple[np.ndarray, dict[int, float]]:
        """``order`` (row indices into ``ids``/``paths``, best fused first) with its same-photo candidates moved
        to the front, and the correlation of every checked row (the best over the query images)."""
        top = min(self.settings.top, len(order))
        if top == 0:
            return order, {}
        query_thumbs = [t for t in (self._query_thumbnail(q) for q in queries) if t is not None]
        if not query_thumbs:
            return order, {}
        matches: dict[int, float] = {}
        for row in order[:top].tolist():
            candidate = self.thumbnail(int(ids[row]), paths[row])
            if candidate is not None:
                matches[row] = max(match_correlation(q, candidate) for q in query_thumbs)
        same = sorted((row for row, value in matches.items() if value >= self.settings.min_correlation),
                      key=lambda row: -matches[row])  # stable: equal matches keep their fused order
        if not same:
            return order, matches
        moved = set(same)
        return np.array(same + [row for row in order.tolist() if row not in moved], dtype=order.dtype), matches

    def _query_thumbnail(self, query: QueryImage) -> np.ndarray | None:
        if query.thumbnail is not None:
            return query.thumbnail
        if query.image_id is None or query.rel_path is None:
            return None
        return self.thumbnail(query.image_id, query.rel_path)
