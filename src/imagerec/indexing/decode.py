"""Decoding, run in the worker processes: one file in, its features and model input (or why not) out.

Everything here is picklable plain data and module-level functions, so an executor can ship a job
and ``DecodeSettings`` to any worker process.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np

from imagerec.data import loading
from imagerec.data.features import HistogramSpec, color_histogram, dhash, hash_to_int64
from imagerec.embed.base import Preprocess
from imagerec.errors import ImageLoadError
from imagerec.indexing.executors.base import DECODER_CRASH
from imagerec.indexing.plan import WorkItem


@dataclass(frozen=True, slots=True)
class DecodeSettings:
    """What a worker needs: the image root, how to load, which histogram, the model's preprocessing (None: no model)."""

    root: bytes
    load: loading.LoadSettings
    histogram: HistogramSpec
    preprocess: Preprocess | None


@dataclass(slots=True)
class Decoded:
    """A worker's output for one image: features, the model input, or the reason it failed."""

    item: WorkItem
    width: int = 0
    height: int = 0
    format: str = ""
    histogram: np.ndarray | None = None
    dhash: int = 0
    pixels: np.ndarray | None = None
    error: ImageLoadError | None = None
    decode_s: float = 0.0  # worker time, summed into IndexSummary.stage_s
    features_s: float = 0.0


def decode_job(items: list[WorkItem], settings: DecodeSettings) -> list[Decoded]:
    """Worker entry point: ``decode_one`` for each item of a job, in order."""
    return [decode_one(item, settings) for item in items]


def decode_one(item: WorkItem, settings: DecodeSettings) -> Decoded:
    """Load one image and compute its histogram and dHash (unless embedding-only) and its model input."""
    path = os.path.join(settings.root, item.file.rel_path)
    t0 = time.perf_counter()
    try:
        loaded = loading.load_image(path, settings.load, item.file.format_hint)
        t1 = time.perf_counter()
        result = Decoded(item, loaded.width, loaded.height, loaded.format, decode_s=t1 - t0)
        if not item.embedding_only:
            result.histogram = color_histogram(loaded.image, settings.histogram)
            result.dhash = hash_to_int64(dhash(loaded.image))
        if settings.preprocess is not None:
            result.pixels = settings.preprocess(loaded.image)
        result.features_s = time.perf_counter() - t1
        return result
    except Exception as exc:  # a bug or an exotic failure must cost one image, not the run
        return Decoded(item, error=as_load_error(exc), decode_s=time.perf_counter() - t0)


def as_load_error(exc: Exception) -> ImageLoadError:
    """``exc`` as a skip reason: an ``ImageLoadError`` as it is, anything else as ``corrupt`` naming the exception."""
    if isinstance(exc, ImageLoadError):
        return exc
    return ImageLoadError(loading.CORRUPT, f"{type(exc).__name__}: {exc}"[:300])


def crashed(item: WorkItem) -> Decoded:
    """The result for an image whose decoder killed its worker process, twice (the executor's ``on_crash``)."""
    return Decoded(item, error=ImageLoadError(DECODER_CRASH, "the image decoder crashed on this file"))
