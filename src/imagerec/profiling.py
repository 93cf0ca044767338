"""``profile``: the real query or index code under cProfile, with wall time per stage.

* ``--mode query``: opens the collection (store, ANN index, model when needed) once, then runs the
  query ``repeat`` times; stages: decode, features, embed (external images only), ann_search,
  stale_merge, fetch (SQLite), rerank.
* ``--mode index``: takes the first ``limit`` images of the scan and runs them through the index
  stages in this process (the real ``loading.load_image``, ``features.*``, ``Embedder.embed`` and
  ``Store.write_batch``, into a scratch database under ``output.dir/cache`` so the collection is not
  touched); stages: decode, features, embed, store. (``index`` itself decodes in worker processes,
  which cProfile in the parent cannot see; this runs the same functions in one process.)

The ``.prof`` files go to ``output.dir/cache/profile_<mode>.prof``; ``python -m pstats FILE`` reads them.
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import Config
from .errors import ImagerecError


@dataclass
class ProfileReport:
    path: Path
    stage_s: dict[str, float]
    text: str


def profile_query(config: Config, *, images: Sequence[str] = (), ids: Sequence[int] = (), repeat: int = 20,
                  top: int = 25, embedder=None) -> ProfileReport:
    from .query import Recommender

    out = config.output.cache_dir / "profile_query.prof"
    stages: Counter = Counter()
    profiler = cProfile.Profile()
    started = time.perf_counter()
    with Recommender(config, embedder=embedder) as rec:
        if not images and not ids:
            first = rec.store.embedding_ids(rec.model_id)[:1]
            ids = [int(first[0])]
        if images:
            rec.embedder  # load the model outside the measured loop  # noqa: B018
        profiler.enable()
        for _ in range(repeat):
            queries = [rec.image_by_id(int(i)) for i in ids] + [rec.image_from_path(p) for p in images]
            response = rec.query(queries)
            stages.update(response.timings)
        profiler.disable()
    total = time.perf_counter() - started
    per_query = {k: v / repeat for k, v in stages.items()}
    header = f"{repeat} queries ({', '.join([*map(str, images), *(f'id {i}' for i in ids)])}); mean wall time per query (s):"
    return _report(profiler, out, per_query, header, top, total)


def profile_index(config: Config, *, limit: int = 200, top: int = 25, embedder=None) -> ProfileReport:
    from . import loading
    from .features import HISTOGRAM_SIDE, HistogramSpec, color_histogram, dhash, hash_to_int64, model_input
    from .indexer import load_embedder
    from .scan import scan_images
    from .store import ImageRecord, SkipRecord, Store

    root = Path(config.data.image_root)
    if not root.is_dir():
        raise ImagerecError(f"data.image_root: {root} is not a folder")
    embedder = embedder if embedder is not None else load_embedder(config)
    spec = HistogramSpec(config.features.histogram.space, config.features.histogram.bins)
    model_size = embedder.image_size if embedder else None
    settings = loading.LoadSettings(config.index.formats, config.index.max_image_pixels,
                                    max(model_size or 0, HISTOGRAM_SIDE // 2))
    files = []
    for f in scan_images(root, follow_symlinks=config.index.follow_symlinks):
        files.append(f)
        if len(files) >= limit:
            break
    if not files:
        raise ImagerecError(f"{root}: no images to profile")
    scratch = config.output.cache_dir / "profile_index_scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    out = config.output.cache_dir / "profile_index.prof"
    stages: Counter = Counter()
    profiler = cProfile.Profile()
    started = time.perf_counter()
    batch_size = config.index.batch_size
    try:
        with Store(scratch / "images.db") as store:
            profiler.enable()
            for start in range(0, len(files), batch_size):
                records, skips, pixels = [], [], []
                for f in files[start : start + batch_size]:
                    t0 = time.perf_counter()
                    try:
                        loaded = loading.load_image(os.path.join(os.fsencode(root), f.rel_path), settings, f.format_hint)
                    except loading.ImageLoadError as exc:
                        skips.append(SkipRecord(f.rel_path, f.size, f.mtime_ns, exc.reason, exc.detail))
                        stages["decode"] += time.perf_counter() - t0
                        continue
                    t1 = time.perf_counter()
                    hist = color_histogram(loaded.image, spec)
                    hval = hash_to_int64(dhash(loaded.image))
                    if model_size:
                        pixels.append(model_input(loaded.image, model_size))
                    t2 = time.perf_counter()
                    stages["decode"] += t1 - t0
                    stages["features"] += t2 - t1
                    records.append(ImageRecord(f.rel_path, f.size, f.mtime_ns, loaded.width, loaded.height, loaded.format, hist, spec.key, hval))
                if embedder is not None and pixels:
                    t0 = time.perf_counter()
                    vectors = embedder.embed(np.stack(pixels))
                    stages["embed"] += time.perf_counter() - t0
                    for rec, vec in zip(records, vectors):
                        rec.embedding, rec.model_id = vec, embedder.model_id
                t0 = time.perf_counter()
                store.write_batch(records, skips)
                stages["store"] += time.perf_counter() - t0
            profiler.disable()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    total = time.perf_counter() - started
    n = len(files)
    header = (f"{n} images from {root} in one process (model {'none' if embedder is None else embedder.model_id}); "
              f"total wall time per stage (s), {n / max(sum(stages.values()), 1e-9):.1f} images/s:")
    return _report(profiler, out, dict(stages), header, top, total)


def _report(profiler: cProfile.Profile, out: Path, stages: dict[str, float], header: str, top: int, total: float) -> ProfileReport:
    out.parent.mkdir(parents=True, exist_ok=True)
    profiler.dump_stats(str(out))
    buffer = io.StringIO()
    pstats.Stats(str(out), stream=buffer).strip_dirs().sort_stats("cumulative").print_stats(top)
    lines = [header]
    for name, seconds in stages.items():
        lines.append(f"  {name:<12} {seconds * 1000:10.2f} ms")
    lines.append(f"  {'(all, incl. set-up and profiler)':<12} {total:.2f} s")
    lines.append(f"profile written to {out} (open with: python -m pstats {out})")
    lines.append(f"top {top} functions by cumulative time:")
    body = buffer.getvalue()
    start = body.find("   ncalls")
    lines.append(body[start:].rstrip() if start >= 0 else body.rstrip())
    return ProfileReport(out, stages, "\n".join(lines))
