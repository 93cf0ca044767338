"""One executor for every decode: the indexer and the training cache both run through LocalExecutor,
and both turn an executor's ``on_crash`` into one skipped image. The indexer takes any ``Executor``."""

from __future__ import annotations

import json
import sqlite3

import pytest

from imagerec.config import load_config
from imagerec.data import loading
from imagerec.data.scan import scan_images
from imagerec.indexing.decode import decode_job
from imagerec.indexing.executors import DECODER_CRASH, LocalExecutor
from imagerec.indexing.run import index_collection
from imagerec.train import cache as train_cache


@pytest.fixture
def photos(tmp_path, make_image):
    root = tmp_path / "photos"
    for i in range(20):  # more than one cache job (16) and one index job (32 is one job: fine)
        make_image(root / f"d{i % 3}" / f"{i:02d}.png", size=(40, 30), seed=i)
    return root


@pytest.fixture
def spy(monkeypatch):
    """Records (executor, fn) for every LocalExecutor.map call, then runs the real one."""
    calls = []
    real = LocalExecutor.map

    def recording(self, jobs, fn, settings, *, on_crash):
        calls.append((self, fn))
        return real(self, jobs, fn, settings, on_crash=on_crash)

    monkeypatch.setattr(LocalExecutor, "map", recording)
    return calls


class CrashOneExecutor:
    """An in-process ``Executor`` that pretends the worker died on every item ``is_marked`` accepts."""

    def __init__(self, is_marked):
        self.is_marked = is_marked
        self.jobs = 0

    def map(self, jobs, fn, settings, *, on_crash):
        for job in jobs:
            self.jobs += 1
            good = [item for item in job if not self.is_marked(item)]
            yield fn(good, settings) if good else []
            for item in job:
                if self.is_marked(item):
                    yield [on_crash(item)]


def test_cache_and_indexer_share_the_pool_executor(photos, write_config, tmp_path, spy):
    config = load_config(write_config(photos))  # index.workers 2
    load = loading.LoadSettings(config.index.formats, config.index.max_image_pixels, 32)
    cache = train_cache.open_or_build_cache(photos, list(scan_images(photos)), 32, tmp_path / "cache", load, workers=2)
    summary = index_collection(config)
    assert cache.ok.all() and summary.indexed == 20
    assert [fn for _, fn in spy] == [train_cache.decode_rows, decode_job]
    assert all(type(ex) is LocalExecutor and not ex.inline and ex.workers == 2 for ex, _ in spy)


def test_indexer_runs_on_an_injected_executor_and_records_a_crash(photos, write_config):
    config = load_config(write_config(photos))
    executor = CrashOneExecutor(lambda item: item.file.rel_path == b"d1/04.png")
    events = []
    summary = index_collection(config, executor=executor, progress=events.append)
    assert executor.jobs == 1
    assert (summary.indexed, dict(summary.skipped)) == (19, {DECODER_CRASH: 1})
    db = sqlite3.connect(f"file:{config.output.layout.db}?mode=ro", uri=True)
    try:
        assert db.execute("SELECT path, reason FROM skipped").fetchall() == [(b"d1/04.png", DECODER_CRASH)]
    finally:
        db.close()
    assert events[-1].done == events[-1].total == 20 and events[-1].counters == {"skipped": 1}
    as_json = json.loads(json.dumps(summary.to_dict()))
    assert as_json["skipped"] == {DECODER_CRASH: 1} and as_json["scan"]["non_image_files"] == 0
    assert as_json["indexed"] == 19 and as_json["processed"] == 20 and set(as_json["stage_s"]) >= {"decode", "store"}
    again = index_collection(config, executor=CrashOneExecutor(lambda item: True))
    assert again.skipped_known == 1 and again.unchanged == 19 and again.processed == 0  # the crash is remembered


def test_cache_records_a_crash_as_one_skipped_row_and_reports_decode_progress(photos, tmp_path, monkeypatch):
    crash_row = 5
    monkeypatch.setattr(train_cache, "LocalExecutor", lambda *a, **k: CrashOneExecutor(lambda item: item[0] == crash_row))
    files = list(scan_images(photos))
    load = loading.LoadSettings(("PNG",), 10_000_000, 32)
    events = []
    cache = train_cache.open_or_build_cache(photos, files, 32, tmp_path / "cache", load, workers=2, progress=events.append)
    assert cache.built and cache.decoded == 20
    assert cache.skipped == [(files[crash_row].rel_path.decode(), DECODER_CRASH)]
    assert list(cache.ok).count(False) == 1 and not cache.ok[crash_row] and not cache.images[crash_row].any()
    assert {e.stage for e in events} == {"decode"} and events[-1].done == events[-1].total == 20
