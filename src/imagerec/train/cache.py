"""Decode the training images once into a uint8 memory-mapped file, so epochs never touch a JPEG.

Layout in ``output.dir/cache/``::

    train_<key>.u8     raw uint8 array (N, S, S, 3), C order: row i is image i of the sidecar's list
    train_<key>.json   {"format": ..., "key": ..., "image_size": S, "paths": [...], "ok": [...],
                        "skipped": [[path, reason], ...]}

``key`` hashes the file list with each file's size and mtime and the image size, so a changed file
set gets a new cache (older ``train_*`` files are removed). Images are decoded with
``loading.load_image`` + ``features.model_input``, i.e. exactly as ``index`` feeds the model. Broken
images keep an all-zero row, are marked ``ok: false`` and listed under ``skipped`` with the reason.
The array is written to a temp file and renamed, then the sidecar is written; the sidecar is the
"complete" marker, so an interrupted build is simply rebuilt; a killed build's temporaries are removed
by the next one. The array's space is reserved (``posix_fallocate``) before it is mapped, so a full
disk is a ``DiskFullError`` before any decoding, not a SIGBUS mid-write. Decoding runs through the indexer's
``LocalExecutor`` (spawned workers, a crashing decoder costs one image: reason ``decoder_crash``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Generator, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imagerec.atomic import atomic_write, commit, held_temp, remove_stale_temps, reserve
from imagerec.data import loading
from imagerec.data.scan import ScannedFile
from imagerec.embed.base import Preprocess
from imagerec.errors import ImageLoadError
from imagerec.indexing.executors import DECODER_CRASH, LocalExecutor
from imagerec.progress import ProgressCallback, report

CACHE_FORMAT = "imagerec.train_cache"
CACHE_VERSION = 1
JOB_SIZE = 16  # images per worker job
STAGE = "decode"  # the ProgressEvent stage of a cache build
_CACHE_FILE = re.compile(r"train_[0-9a-f]{20}\.(u8|json)")

Row = tuple[int, ScannedFile]  # (row in the cache, file)
RowResult = tuple[int, "np.ndarray | None", "str | None"]  # (row, pixels, None) or (row, None, reason)


@dataclass(frozen=True)
class TrainCache:
    """An opened cache: ``images[i]`` is the (S, S, 3) uint8 model input of ``paths[i]``."""

    images: np.ndarray  # read-only memmap (N, S, S, 3)
    paths: list[str]
    ok: np.ndarray  # (N,) bool: False where the image could not be decoded (row is zeros)
    skipped: list[tuple[str, str]]  # (path, reason) of the images that could not be decoded
    key: str
    image_size: int
    built: bool  # True when this call decoded the images, False when an existing cache was reused
    decoded: int  # images decoded by this call (0 when reused)


@dataclass(frozen=True, slots=True)
class CacheDecodeSettings:
    """What a worker needs to decode cache rows (picklable)."""

    root: bytes
    load: loading.LoadSettings
    preprocess: Preprocess


def cache_key(files: Sequence[ScannedFile], image_size: int) -> str:
    """Identifies a cache by the file list (path, size, mtime) and the image size."""
    digest = hashlib.sha256(f"{CACHE_FORMAT}:{CACHE_VERSION}:{image_size}\n".encode())
    for f in files:
        digest.update(f.rel_path + b"\0" + f"{f.size}:{f.mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def open_or_build_cache(
    root: Path,
    files: Sequence[ScannedFile],
    image_size: int,
    cache_dir: Path,
    load: loading.LoadSettings,
    workers: int = 1,
    progress: ProgressCallback | None = None,
) -> TrainCache:
    """Open the cache for ``files`` at ``image_size`` under ``cache_dir``, building it if absent.

    ``progress`` receives ``ProgressEvent("decode", done, len(files))`` as images are decoded.
    Ctrl-C during a build leaves no cache behind.
    """
    key = cache_key(files, image_size)
    cache_dir = Path(cache_dir)
    data_path, meta_path = cache_dir / f"train_{key}.u8", cache_dir / f"train_{key}.json"
    if not (meta_path.exists() and data_path.exists()):
        for name in ("train_*.u8", "train_*.json"):
            remove_stale_temps(cache_dir / name)
        settings = CacheDecodeSettings(os.fsencode(root), load, Preprocess(image_size))
        decoded = _build(files, settings, data_path, meta_path, workers, progress)
        _remove_stale(cache_dir, keep=key)
        return _open(data_path, meta_path, built=True, decoded=decoded)
    return _open(data_path, meta_path, built=False, decoded=0)


def _open(data_path: Path, meta_path: Path, built: bool, decoded: int) -> TrainCache:
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    size, n = meta["image_size"], len(meta["paths"])
    images = np.memmap(data_path, dtype=np.uint8, mode="r", shape=(n, size, size, 3)) if n else np.zeros((0, size, size, 3), np.uint8)
    skipped = [(p, r) for p, r in meta["skipped"]]
    return TrainCache(images, meta["paths"], np.asarray(meta["ok"], dtype=bool), skipped, meta["key"], size, built, decoded)


def _build(
    files: Sequence[ScannedFile],
    settings: CacheDecodeSettings,
    data_path: Path,
    meta_path: Path,
    workers: int,
    progress: ProgressCallback | None,
) -> int:
    """Decode ``files`` into the array file, then write the sidecar (the commit point). Returns the count."""
    n, size = len(files), settings.preprocess.input_size
    ok = np.zeros(n, dtype=bool)
    skipped: list[tuple[str, str]] = []
    with held_temp(data_path) as tmp:
        if n:
            with open(tmp, "r+b") as fh:
                reserve(fh.fileno(), n * size * size * 3, data_path)
            out = np.memmap(tmp, dtype=np.uint8, mode="r+", shape=(n, size, size, 3))
            done = 0
            with closing(_decode(files, settings, workers)) as jobs:
                for results in jobs:
                    for row, pixels, reason in results:
                        if reason is None:
                            out[row] = pixels
                            ok[row] = True
                        else:
                            skipped.append((_path_text(files[row].rel_path), reason))
                    done += len(results)
                    report(progress, STAGE, done, n)
            out.flush()
            del out
        commit(tmp, data_path)
    meta = {
        "format": CACHE_FORMAT, "format_version": CACHE_VERSION, "key": data_path.stem.removeprefix("train_"),
        "image_size": size, "paths": [_path_text(f.rel_path) for f in files], "ok": ok.tolist(),
        "skipped": sorted(skipped),
    }
    with atomic_write(meta_path, "w", encoding="utf-8") as fh:
        json.dump(meta, fh)
    return n


def _decode(files: Sequence[ScannedFile], settings: CacheDecodeSettings, workers: int) -> Generator[list[RowResult], None, None]:
    """Each job's results as it finishes, from the shared executor (in this process for a single job or worker)."""
    n = len(files)
    jobs = ([(r, files[r]) for r in range(i, min(i + JOB_SIZE, n))] for i in range(0, n, JOB_SIZE))
    executor = LocalExecutor(workers if n > JOB_SIZE else 1, max_in_flight=4 * workers, inline=True)
    return executor.map(jobs, decode_rows, settings, on_crash=_crashed)


def decode_rows(rows: list[Row], settings: CacheDecodeSettings) -> list[RowResult]:
    """Worker entry point: (row, pixels, None) or (row, None, reason) per row."""
    results: list[RowResult] = []
    for row, f in rows:
        try:
            loaded = loading.load_image(os.path.join(settings.root, f.rel_path), settings.load, f.format_hint)
            results.append((row, settings.preprocess(loaded.image), None))
        except ImageLoadError as exc:
            results.append((row, None, exc.reason))
        except Exception as exc:  # an exotic failure costs one image, not the build
            results.append((row, None, f"{loading.CORRUPT} ({type(exc).__name__})"))
    return results


def _crashed(item: Row) -> RowResult:
    return item[0], None, DECODER_CRASH


def _remove_stale(cache_dir: Path, keep: str) -> None:
    """Older caches only (temporaries are left to ``remove_stale_temps``: a live build's are locked)."""
    for path in cache_dir.glob("train_*"):
        if _CACHE_FILE.fullmatch(path.name) and not path.name.startswith(f"train_{keep}."):
            path.unlink(missing_ok=True)


def _path_text(rel_path: bytes) -> str:
    return os.fsdecode(rel_path)
