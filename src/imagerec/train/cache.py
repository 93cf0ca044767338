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
"complete" marker, so an interrupted build is simply rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from imagerec.embed.base import Preprocess
from imagerec.data import loading
from imagerec.errors import ImageLoadError
from imagerec.data.scan import ScannedFile

CACHE_FORMAT = "imagerec.train_cache"
CACHE_VERSION = 1
JOB_SIZE = 16  # images per worker job
DECODER_CRASH = "decoder_crash"


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
    progress: Callable[[int], None] | None = None,
) -> TrainCache:
    """Open the cache for ``files`` at ``image_size`` under ``cache_dir``, building it if absent.

    ``progress(n)`` is called as images are decoded. Ctrl-C during a build leaves no cache behind.
    """
    key = cache_key(files, image_size)
    cache_dir = Path(cache_dir)
    data_path, meta_path = cache_dir / f"train_{key}.u8", cache_dir / f"train_{key}.json"
    if not (meta_path.exists() and data_path.exists()):
        decoded = _build(root, files, image_size, data_path, meta_path, load, workers, progress)
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
    root: Path,
    files: Sequence[ScannedFile],
    image_size: int,
    data_path: Path,
    meta_path: Path,
    load: loading.LoadSettings,
    workers: int,
    progress: Callable[[int], None] | None,
) -> int:
    data_path.parent.mkdir(parents=True, exist_ok=True)
    n = len(files)
    fd, tmp = tempfile.mkstemp(prefix=data_path.name + ".", suffix=".tmp", dir=data_path.parent)
    os.close(fd)
    ok = np.zeros(n, dtype=bool)
    skipped: list[tuple[str, str]] = []
    try:
        if n:
            out = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=(n, image_size, image_size, 3))
            jobs = [list(range(i, min(i + JOB_SIZE, n))) for i in range(0, n, JOB_SIZE)]
            settings = (os.fsencode(root), load, image_size)
            for start_rows, results in _decode_all(jobs, files, settings, workers):
                for row, (pixels, error) in zip(start_rows, results):
                    if error is None:
                        out[row] = pixels
                        ok[row] = True
                    else:
                        skipped.append((_path_text(files[row].rel_path), error))
                if progress:
                    progress(len(start_rows))
            out.flush()
            del out
        os.replace(tmp, data_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    meta = {
        "format": CACHE_FORMAT, "format_version": CACHE_VERSION, "key": data_path.stem.removeprefix("train_"),
        "image_size": image_size, "paths": [_path_text(f.rel_path) for f in files], "ok": ok.tolist(),
        "skipped": sorted(skipped),
    }
    fd, tmp_meta = tempfile.mkstemp(prefix=meta_path.name + ".", suffix=".tmp", dir=meta_path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(meta, fh)
    os.replace(tmp_meta, meta_path)
    return n


def _decode_all(jobs: list[list[int]], files: Sequence[ScannedFile], settings, workers: int):
    """Yield (rows, results) per job, decoding in ``workers`` processes (inline when workers == 1).

    If a C decoder kills a worker, the pool is rebuilt and the jobs that were in flight are retried
    one image at a time, so only the image that crashes again is lost (reason ``decoder_crash``).
    """
    if workers <= 1 or len(jobs) <= 1:
        for rows in jobs:
            yield rows, decode_rows([files[r] for r in rows], settings)
        return
    pending: list[list[int]] = list(reversed(jobs))
    suspects: list[list[int]] = []
    while pending or suspects:
        isolated = bool(suspects)
        in_flight: dict[Future, list[int]] = {}
        pool = ProcessPoolExecutor(1 if isolated else workers, mp_context=get_context("spawn"), initializer=_worker_init)
        try:
            while True:
                queue = suspects if isolated else pending
                while queue and len(in_flight) < (1 if isolated else 4 * workers):
                    rows = queue.pop()
                    in_flight[pool.submit(decode_rows, [files[r] for r in rows], settings)] = rows
                if not in_flight:
                    break
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    rows = in_flight.pop(future)
                    yield rows, future.result()
        except BrokenProcessPool:
            lost = [rows for rows in in_flight.values()]
            if isolated and len(lost) == 1 and len(lost[0]) == 1:
                yield lost[0], [(None, DECODER_CRASH)]
            else:
                suspects.extend([r] for rows in lost for r in rows)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def decode_rows(files: list[ScannedFile], settings) -> list[tuple[np.ndarray | None, str | None]]:
    """Worker entry point: (pixels, None) or (None, reason) per file."""
    root, load, size = settings
    results: list[tuple[np.ndarray | None, str | None]] = []
    for f in files:
        try:
            loaded = loading.load_image(os.path.join(root, f.rel_path), load, f.format_hint)
            results.append((Preprocess(size)(loaded.image), None))
        except ImageLoadError as exc:
            results.append((None, exc.reason))
        except Exception as exc:  # an exotic failure costs one image, not the build
            results.append((None, f"{loading.CORRUPT} ({type(exc).__name__})"))
    return results


def _worker_init() -> None:
    # Ctrl-C reaches the whole process group; only the parent decides how to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _remove_stale(cache_dir: Path, keep: str) -> None:
    for path in cache_dir.glob("train_*"):
        if not path.name.startswith(f"train_{keep}."):
            path.unlink(missing_ok=True)


def _path_text(rel_path: bytes) -> str:
    return os.fsdecode(rel_path)
