"""What the duplicate finder knows of each image: the catalog arrays, and the evidence for any pair of images."""

from __future__ import annotations

import numpy as np

from imagerec.search.similarity import bhattacharyya_coefficient, hamming_distance
from imagerec.store import Store

_CATALOG = "SELECT id, dhash, size, mtime_ns, width, height FROM images WHERE id > ? ORDER BY id LIMIT ?"
_CHUNK = 900  # ids per IN (...) query


class Catalog:
    """Per-image facts as arrays in id order (~40 bytes per image), read in pages; paths and histograms are
    read from the store on demand, once per image."""

    def __init__(self, store: Store, page: int = 50_000):
        self.store = store
        parts, last = [], 0
        while rows := store.read(_CATALOG, (last, page)):
            parts.append(np.asarray(rows, dtype=np.int64))
            last = rows[-1][0]
        table = np.concatenate(parts) if parts else np.zeros((0, 6), dtype=np.int64)
        self.ids, self.dhash, self.size, self.mtime_ns, self.width, self.height = table.T.copy()
        self._paths: dict[int, bytes] = {}
        self._histograms: dict[int, np.ndarray] = {}

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.ids, ids)

    def hamming(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """dHash Hamming distance of each pair of ids."""
        return hamming_distance(self.dhash[self.rows_of(a)], self.dhash[self.rows_of(b)])

    def same_file_facts(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Whether each pair has equal file size and dimensions (with equal dHashes: worth comparing bytes)."""
        ra, rb = self.rows_of(a), self.rows_of(b)
        return (self.size[ra] == self.size[rb]) & (self.width[ra] == self.width[rb]) & (self.height[ra] == self.height[rb])

    def path(self, image_id: int) -> bytes:
        """Stored (relative) path of an image already read by ``load``."""
        return self._paths[image_id]

    def load(self, ids: np.ndarray) -> None:
        """Read the paths and histograms of ``ids`` not read yet (chunked ``Store.get_images``)."""
        missing = [i for i in np.unique(ids).tolist() if i not in self._paths]
        for start in range(0, len(missing), _CHUNK):
            for image in self.store.get_images(missing[start:start + _CHUNK]):
                self._paths[image.id] = image.path
                self._histograms[image.id] = image.histogram

    def colors(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Bhattacharyya coefficient of each pair's colour histograms."""
        self.load(np.concatenate([a, b]))
        out = np.empty(len(a), np.float32)
        for s in range(0, len(a), 16_384):
            ha = np.stack([self._histograms[i] for i in a[s:s + 16_384].tolist()])
            hb = np.stack([self._histograms[i] for i in b[s:s + 16_384].tolist()])
            out[s:s + 16_384] = bhattacharyya_coefficient(ha, hb)
        return out

    def evidence(self, vectors, a: np.ndarray, b: np.ndarray, *,
                 with_color: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
        """(Hamming, cosine — NaN without embeddings, colour — without embeddings and if ``with_color``, else None,
        maybe-identical: equal dHash, size and dimensions) of each pair of ids."""
        hamming = self.hamming(a, b)
        cosine = vectors.cosine(a, b) if vectors is not None else np.full(len(a), np.nan, np.float32)
        color = self.colors(a, b) if vectors is None and with_color else None
        return hamming, cosine, color, self.same_file_facts(a, b) & (hamming == 0)
