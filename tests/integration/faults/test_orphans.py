"""``kill -9`` of the parent alone (not its group): its decode workers and the multiprocessing resource
tracker must be gone within a few seconds, for ``index`` and for the training-cache build."""

from __future__ import annotations

import os
import shutil
import signal

import pytest
from fault_procs import Run, copy_sample, image_rows, write_config

GONE_WITHIN_S = 5


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return copy_sample(tmp_path_factory.mktemp("orphans") / "photos")




def _kill_parent_and_list_orphans(run: Run, ready) -> list[str]:
    try:
        assert run.wait_until(ready), f"run ended before the kill: {run.stderr()[-500:]}"
        assert len(run.group()) > 1, "no worker to orphan"
        os.kill(run.pid, signal.SIGKILL)
        assert run.proc.wait(timeout=30) == -signal.SIGKILL
        return run.orphans_after(GONE_WITHIN_S)
    finally:
        run.kill()  # the whole group, whatever is left


@pytest.mark.parametrize("attempt", range(3))
def test_index_workers_die_with_a_killed_parent(tmp_path, photos, tiny_model_file, attempt):
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(tiny_model_file, out / "embedding_model.pt")
    run = Run(write_config(tmp_path / "c.yaml", photos, out), tmp_path, "index", "index", "--quiet")
    left = _kill_parent_and_list_orphans(run, lambda: (out / "images.db").exists() and image_rows(out / "images.db") >= 16 * (attempt + 1))
    assert left == [], f"still running {GONE_WITHIN_S} s after the parent was killed: {left}"


def test_cache_workers_die_with_a_killed_trainer(tmp_path, photos):
    out = tmp_path / "out"
    run = Run(write_config(tmp_path / "c.yaml", photos, out, train={"max_images": 300}), tmp_path, "train",
              "train-embeddings", "--quiet")
    left = _kill_parent_and_list_orphans(run, lambda: len(run.group()) >= 3)  # parent + workers (+ tracker)
    assert left == [], f"still running {GONE_WITHIN_S} s after the parent was killed: {left}"
