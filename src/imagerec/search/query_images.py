"""Query images: from a stored id, from a file of the collection (stored features reused), or decoded.

A file outside the collection (or changed since ``index``) is decoded, featurised and embedded with
exactly the functions and settings ``index`` uses (``loading.load_image``, ``features.color_histogram``
/ ``dhash``, the embedder's ``preprocess`` and ``embed``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from imagerec.data import loading
from imagerec.data.features import HistogramSpec, color_histogram, decode_min_side, dhash, hash_to_int64
from imagerec.errors import ImageLoadError
from imagerec.errors import QueryError
from imagerec.search.fusion import QueryImage
from imagerec.search.match import grey_thumbnail
from imagerec.store import Store


@dataclass(frozen=True, slots=True)
class DecodeRules:
    """How ``index`` decodes and featurises: the allow-list, pixel limit and histogram."""

    formats: tuple[str, ...]
    max_pixels: int
    histogram: HistogramSpec


def image_by_id(store: Store, model_id: str, image_id: int) -> QueryImage:
    """The stored features of collection image ``image_id``."""
    if not -(1 << 63) <= int(image_id) < (1 << 63):
        raise QueryError(f"no image with id {image_id} in the collection")
    rows = store.get_features([image_id], model_id)
    if len(rows) == 0:
        if not store.get_images([image_id]):
            raise QueryError(f"no image with id {image_id} in the collection")
        raise QueryError(f"image {image_id} has no embedding of model {model_id}; run 'index' again")
    return QueryImage(f"id {image_id}", rows.embeddings[0], rows.histograms[0], int(rows.dhashes[0]),
                      int(image_id), rows.paths[0], None, "stored")


def stored_query_image(store: Store, model_id: str, hist_key: str, image_root: Path, path: Path) -> tuple[QueryImage | None, bytes | None]:
    """(stored features, rel path) when ``path`` is an unchanged collection image; (None, rel path or None) otherwise."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise QueryError(f"{path}: query image not found") from None
    except OSError as exc:
        raise QueryError(f"{path}: cannot read query image ({exc.strerror})") from None
    rel = collection_rel_path(image_root, path)
    if rel is None:
        return None, None
    state = store.lookup([rel]).get(rel)
    if (state is None or (state.size, state.mtime_ns) != (st.st_size, st.st_mtime_ns)
            or state.histogram_key != hist_key or state.model_id != model_id):
        return None, rel
    query = image_by_id(store, model_id, state.image_id)
    return replace(query, label=str(path), file_path=str(path)), rel


def decode_query_image(path: Path, rules: DecodeRules, embedder, rel: bytes | None = None) -> tuple[QueryImage, dict[str, float]]:
    """Decode, featurise and embed ``path`` as ``index`` does; also returns the seconds per stage."""
    t0 = time.perf_counter()
    settings = loading.LoadSettings(rules.formats, rules.max_pixels, decode_min_side(embedder.preprocess.min_side))
    try:
        loaded = loading.load_path(path, settings)
    except ImageLoadError as exc:
        raise QueryError(f"{path}: cannot use this query image ({exc})") from None
    t1 = time.perf_counter()
    histogram = color_histogram(loaded.image, rules.histogram)
    hash_value = hash_to_int64(dhash(loaded.image))
    pixels = embedder.preprocess(loaded.image)
    t2 = time.perf_counter()
    vector = embedder.embed(np.stack([pixels]))[0]  # a fresh writable batch, as the indexer builds it
    t3 = time.perf_counter()
    query = QueryImage(str(path), vector, histogram, hash_value, None, rel, str(path), "decoded",
                       grey_thumbnail(loaded.image))
    return query, {"decode": t1 - t0, "features": t2 - t1, "embed": t3 - t2}


def collection_rel_path(image_root: Path, path: Path) -> bytes | None:
    """``path`` relative to ``image_root`` as stored ('/'-separated bytes), or None when it lies outside."""
    root = os.path.realpath(image_root)
    real = os.path.realpath(path)
    try:
        rel = os.path.relpath(real, root)
    except ValueError:  # different drives (Windows)
        return None
    if rel == os.curdir or rel.startswith(os.pardir + os.sep) or rel == os.pardir or os.path.isabs(rel):
        return None
    return os.fsencode(rel.replace(os.sep, "/"))
