"""Training data: which files, the decoded cache, the seeded train/val split, folder labels, batches.

Files: those under ``data.image_root`` (optionally only ``train.file_list``), a seeded random subset of
at most ``train.max_images`` (reservoir sampling, so memory stays bounded), in path order. They are
decoded once into the ``train.cache`` memmap; each step's batch is read from it by a prefetch thread.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from imagerec.data.scan import ScannedFile, scan_images
from imagerec.errors import Interrupted, TrainError
from imagerec.progress import ProgressCallback
from imagerec.store.records import top_folder
from imagerec.train.cache import TrainCache, open_or_build_cache
from imagerec.train.settings import TrainSettings


@dataclass(frozen=True)
class TrainData:
    """The decoded images and which cache rows train, validate, and (when known) their classes."""

    cache: TrainCache
    train_rows: np.ndarray
    val_rows: np.ndarray
    labels: np.ndarray | None  # class code per cache row, when images sit in class folders


LOOKUP_CHUNK = 500  # paths per SQLite look-up


def select_files(settings: TrainSettings) -> list[ScannedFile]:
    """The training files: a seeded subset of at most ``train.max_images``, in path order."""
    tc, root = settings.train, settings.image_root
    if not root.is_dir():
        raise TrainError(f"data.image_root: {root} is not a folder; fix it in {settings.where}")
    wanted = read_file_list(settings.file_list) if settings.file_list is not None else None
    rng = random.Random(tc.seed)
    reservoir: list[ScannedFile] = []
    seen = 0
    for scanned in scan_images(root, follow_symlinks=settings.follow_symlinks):
        if scanned.format_hint not in settings.formats or (wanted is not None and scanned.rel_path not in wanted):
            continue
        seen += 1
        if len(reservoir) < tc.max_images:
            reservoir.append(scanned)
        else:
            j = rng.randrange(seen)
            if j < tc.max_images:
                reservoir[j] = scanned
    return sorted(without_known_broken(reservoir, settings.layout.db), key=lambda f: f.rel_path)


def without_known_broken(files: list[ScannedFile], db: Path) -> list[ScannedFile]:
    """``files`` less those the collection's database records as skipped at the same size and mtime
    (broken, truncated, bombs: decoding them again only costs time and repeats the decoder's noise)."""
    if not files or not db.exists():
        return files
    from imagerec.store import Store

    broken: set[bytes] = set()
    with Store(db, readonly=True) as store:
        for start in range(0, len(files), LOOKUP_CHUNK):
            part = files[start:start + LOOKUP_CHUNK]
            recorded = store.lookup_skipped([f.rel_path for f in part])
            broken.update(f.rel_path for f in part if recorded.get(f.rel_path, (None, None))[:2] == (f.size, f.mtime_ns))
    return [f for f in files if f.rel_path not in broken]


def read_file_list(path: Path) -> set[bytes]:
    """The paths listed in the ``train.file_list`` file (relative to the image root), as bytes."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise TrainError(f"train.file_list: cannot read {path} ({exc.strerror or exc})") from None
    return {os.fsencode(line.strip()) for line in lines if line.strip()}


def prepare_data(settings: TrainSettings, progress: ProgressCallback | None, say: Callable[[str], None]) -> TrainData:
    """Select the files, open (or build: events of stage "decode") the cache, split it train/val."""
    tc, cache_dir = settings.train, settings.layout.cache_dir
    files = select_files(settings)
    if len(files) < 2:
        raise TrainError(f"found {len(files)} image(s) under {settings.image_root}; training needs at least 2")
    try:
        cache = open_or_build_cache(settings.image_root, files, settings.image_size, cache_dir, settings.load_settings(),
                                    tc.workers or os.cpu_count() or 1, progress=progress)
    except KeyboardInterrupt:
        raise Interrupted("interrupted while building the training cache; nothing was kept") from None
    if cache.built:
        say(f"decoded {cache.decoded} images into {cache_dir}")
    if cache.skipped:
        shown = ", ".join(f"{p} ({r})" for p, r in cache.skipped[:5])
        say(f"skipped {len(cache.skipped)} image(s) that could not be decoded: {shown}" + (" ..." if len(cache.skipped) > 5 else ""))
    rows = np.flatnonzero(cache.ok)
    if len(rows) < 2:
        raise TrainError(f"only {len(rows)} decodable image(s); training needs at least 2")
    train_rows, val_rows = split_rows(rows, tc.val_fraction, tc.seed)
    return TrainData(cache, train_rows, val_rows, folder_labels(cache.paths))


def split_rows(rows: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, val) split of ``rows``, each sorted; val is empty or has >= 2 rows, train >= 2."""
    order = np.random.default_rng([seed, 1]).permutation(rows)
    n_val = int(round(val_fraction * len(rows)))
    if 0 < n_val < 2 or len(rows) - n_val < 2:
        n_val = 2 if len(rows) >= 4 and val_fraction > 0 else 0
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def folder_labels(paths: list[str]) -> np.ndarray | None:
    """Class code per path from its top-level folder, when every image sits in one and there are >= 2."""
    if not paths or any("/" not in p for p in paths):
        return None
    tops = [top_folder(os.fsencode(p)) for p in paths]
    classes, codes = np.unique(np.asarray(tops), return_inverse=True)
    return codes if len(classes) >= 2 else None


def epoch_batches(train_rows: np.ndarray, batch: int, seed: int, epoch: int, first_step: int) -> list[np.ndarray]:
    """The cache rows of each step of ``epoch`` from ``first_step`` on (seeded shuffle, full batches only)."""
    order = np.random.default_rng([seed, epoch, 2]).permutation(len(train_rows))
    steps = len(train_rows) // batch
    return [np.sort(train_rows[order[i * batch:(i + 1) * batch]]) for i in range(first_step, steps)]


def chunks(rows: np.ndarray, size: int) -> list[np.ndarray]:
    """``rows`` in consecutive pieces of ``size`` (the last one shorter)."""
    return [rows[i:i + size] for i in range(0, len(rows), size)]


def prefetch_batches(images: np.ndarray, index_lists: list[np.ndarray], pin: bool) -> Iterator[torch.Tensor]:
    """Uint8 NHWC batches read from the memmap, the next one prefetched by a thread."""

    def read(rows: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(np.take(images, rows, axis=0))
        return tensor.pin_memory() if pin else tensor

    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(read, index_lists[0]) if index_lists else None
        for i in range(len(index_lists)):
            current = pending.result()
            pending = pool.submit(read, index_lists[i + 1]) if i + 1 < len(index_lists) else None
            yield current
