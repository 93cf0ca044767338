"""``profile``: the real query or index code under cProfile, with wall time per stage.

* ``--mode query``: opens the collection (store, ANN index, model when needed) once, then runs the
  query ``repeat`` times; stages: decode, features, embed (external images only), ann_search,
  stale_merge, fetch (SQLite), rerank, same_photo.
* ``--mode index``: takes the first ``limit`` images of the scan and runs them through the indexer's
  own ``decode_job``, embed step and writer in this process (an inline ``LocalExecutor``), into a
  scratch database under ``output.dir/cache`` so the collection is not touched; stages: decode,
  features, embed, store.
  (``index`` itself decodes in worker processes, which cProfile in the parent cannot see.)

The ``.prof`` files go to ``output.dir/cache/profile_<mode>.prof``; ``python -m pstats FILE`` reads them.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from itertools import islice
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from imagerec.config import Config
from imagerec.errors import ImagerecError


@dataclass
class ProfileReport:
    path: Path
    stage_s: dict[str, float]
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "stage_s": dict(self.stage_s), "text": self.text}


def profile_query(config: Config, *, images: Sequence[str] = (), ids: Sequence[int] = (), repeat: int = 20,
                  top: int = 25, embedder=None) -> ProfileReport:
    from imagerec.search.recommender import Recommender

    out = config.output.layout.cache_dir / "profile_query.prof"
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
            response = rec.search(ids=ids, images=images)
            stages.update(response.timings)
        profiler.disable()
    total = time.perf_counter() - started
    per_query = {k: v / repeat for k, v in stages.items()}
    header = f"{repeat} queries ({', '.join([*map(str, images), *(f'id {i}' for i in ids)])}); mean wall time per query (s):"
    return _report(profiler, out, per_query, header, top, total)


def profile_index(config: Config, *, limit: int = 200, top: int = 25, embedder=None) -> ProfileReport:
    """The first ``limit`` scanned images through the indexer's decode, embed step and writer, in this process."""
    from imagerec.indexing.decode import crashed, decode_job
    from imagerec.indexing.executors import LocalExecutor
    from imagerec.indexing.plan import WorkItem, batched
    from imagerec.indexing.run import index_settings, load_index_embedder, make_sink
    from imagerec.indexing.summary import IndexProgress, IndexSummary
    from imagerec.store import Store

    root = Path(config.data.image_root)
    if not root.is_dir():
        raise ImagerecError(f"data.image_root: {root} is not a folder")
    embedder = embedder if embedder is not None else load_index_embedder(config)
    settings = index_settings(config, embedder)
    files = list(islice(settings.scan.files(), limit))
    if not files:
        raise ImagerecError(f"{root}: no images to profile")
    scratch = config.output.layout.cache_dir / "profile_index_scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    out = config.output.layout.cache_dir / "profile_index.prof"
    summary = IndexSummary(model_id=embedder.model_id if embedder else None)
    items = [WorkItem(f, None, embedding_only=False) for f in files]
    inline = LocalExecutor(1, inline=True)  # cProfile sees only this process
    profiler = cProfile.Profile()
    started = time.perf_counter()
    try:
        with Store(scratch / "images.db") as store:
            sink = make_sink(store, settings, embedder, summary, IndexProgress(None, None, summary))
            profiler.enable()
            for results in inline.map(batched(items, settings.batch_size), decode_job, settings.decode, on_crash=crashed):
                sink.add(results)
            sink.flush()
            profiler.disable()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    total = time.perf_counter() - started
    n = len(files)
    stages = {name: summary.stage_s[name] for name in ("decode", "features", "embed", "store") if name in summary.stage_s}
    header = (f"{n} images from {root} in one process (model {'none' if embedder is None else embedder.model_id}); "
              f"total wall time per stage (s), {n / max(sum(stages.values()), 1e-9):.1f} images/s:")
    return _report(profiler, out, stages, header, top, total)


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
