"""``index --executor ray`` against the local executor on the same real photos and broken files.

One local Ray instance for the module (``num_cpus=2``, as on the CI machine). Every expectation
compares against a real local ``index`` of the same folder with the same model, read straight from
SQLite: the Ray path must store the same rows, broken files included, resume a killed run without
recomputing, and ``ingest`` its shards into another collection identically.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner

from conftest import SAMPLE_DIR
from imagerec.cli import cli
from imagerec.config import load_config
from imagerec.indexing.run import index_collection

BAD_INPUTS = ("corrupt_or_truncated/bmp__b__badbitcount.bmp", "corrupt_or_truncated/apng__syntax_num_frames_zero.png",
              "decompression_bomb/decompression_bomb.gif")
PER_FOLDER = 6  # photos per sample folder: 60 real photos


@pytest.fixture(scope="module")
def ray_address():
    """A local Ray instance for these tests (shut down after them); its GCS address lets subprocesses join it."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def photos(tmp_path_factory, shared_data) -> Path:
    """60 real photos in folders, three broken files from the shared bad inputs and one truncated JPEG."""
    root = tmp_path_factory.mktemp("ray") / "photos"
    for folder in sorted(SAMPLE_DIR.iterdir()):
        for photo in sorted(folder.iterdir())[:PER_FOLDER]:
            (root / folder.name).mkdir(parents=True, exist_ok=True)
            shutil.copy2(photo, root / folder.name / photo.name)
    for bad in BAD_INPUTS:
        shutil.copy2(shared_data / "bad-inputs" / bad, (root / "bad").mkdir(exist_ok=True) or root / "bad" / Path(bad).name)
    jpeg = next((root / "Leopards").iterdir()).read_bytes()
    (root / "bad" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    return root


@pytest.fixture(scope="module")
def local_db(photos, tmp_path_factory, tiny_model_file) -> Path:
    """The reference: the same folder indexed by the local executor."""
    config = load_config(make_config(tmp_path_factory.mktemp("local"), photos, tiny_model_file))
    index_collection(config)
    return config.output.layout.db


def make_config(folder: Path, photos: Path, model_file: Path, **ray) -> Path:
    out = folder / "out"
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(model_file, out / "embedding_model.pt")
    raw = {"data": {"image_root": str(photos)}, "output": {"dir": str(out)}, "runtime": {"device": "cpu", "threads": 1},
           "model": {"arch": "resnet18", "init": "random"},
           "index": {"workers": 2, "batch_size": 16, "ray": {"chunk_rows": 16, **ray}}}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def stored(db: Path) -> tuple[dict, dict, dict]:
    """(images by path, embeddings by path, skip records by path), straight from SQLite."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        images = {r[0]: r[1:] for r in con.execute(
            "SELECT path, size, mtime_ns, width, height, format, histogram, histogram_key, dhash FROM images")}
        vectors = {r[0]: (r[1], np.frombuffer(r[2], "<f4")) for r in con.execute(
            "SELECT i.path, e.model_id, e.vector FROM embeddings e JOIN images i ON i.id = e.image_id")}
        skipped = {r[0]: r[1:] for r in con.execute("SELECT path, size, mtime_ns, reason, detail, settings FROM skipped")}
        return images, vectors, skipped
    finally:
        con.close()


def assert_same_rows(db: Path, reference: Path) -> None:
    images, vectors, skipped = stored(db)
    ref_images, ref_vectors, ref_skipped = stored(reference)
    assert len(ref_images) == 6 * len(list(SAMPLE_DIR.iterdir())) and len(ref_skipped) == len(BAD_INPUTS) + 1
    assert images == ref_images  # features byte for byte: size, mtime, dimensions, format, histogram, dHash
    assert skipped == ref_skipped  # broken files: same reason, detail and load settings
    assert set(vectors) == set(ref_vectors) == set(ref_images)
    for path, (model_id, vector) in vectors.items():
        assert model_id == ref_vectors[path][0]
        np.testing.assert_allclose(vector, ref_vectors[path][1], atol=1e-5)


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), obj={}, prog_name="imagerec")


def test_ray_rows_equal_the_local_executor(ray_address, photos, local_db, tmp_path, tiny_model_file):
    config = load_config(make_config(tmp_path, photos, tiny_model_file)).with_overrides({"index.executor": "ray"})
    summary = index_collection(config)
    assert summary.indexed == len(stored(local_db)[0]) and sum(summary.skipped.values()) == len(BAD_INPUTS) + 1
    assert_same_rows(config.output.layout.db, local_db)
    assert not (config.output.dir / "distributed").exists()  # ingested shards are deleted

    again = index_collection(config)  # nothing changed: nothing to compute, Ray is not asked
    assert again.processed == 0 and again.unchanged == len(stored(local_db)[0])


def test_shards_ingest_into_another_collection(ray_address, photos, local_db, tmp_path, tiny_model_file):
    config_path = make_config(tmp_path / "a", photos, tiny_model_file, keep_shards=True)
    result = invoke("--config", str(config_path), "index", "--executor", "ray", "--ray-address", ray_address, "-q")
    assert result.exit_code == 0, result.output
    shard_dir = next((tmp_path / "a" / "out" / "distributed").iterdir()) / "shards"
    other = make_config(tmp_path / "b", photos, tiny_model_file)
    result = invoke("--config", str(other), "ingest", str(shard_dir), "-q")
    assert result.exit_code == 0, result.output
    assert_same_rows(tmp_path / "b" / "out" / "images.db", local_db)
    assert invoke("--config", str(other), "ingest", str(shard_dir), "-q").exit_code == 0  # twice: same rows
    assert_same_rows(tmp_path / "b" / "out" / "images.db", local_db)

    damaged = shard_dir / "damaged.parquet"
    damaged.write_bytes(next(shard_dir.glob("*.parquet")).read_bytes()[:200])
    result = invoke("--config", str(other), "ingest", str(shard_dir))
    assert result.exit_code == 1
    assert result.output.strip().startswith("error:") and "damaged.parquet" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_killed_ray_run_resumes_without_recomputing(ray_address, photos, local_db, tmp_path, tiny_model_file):
    config = make_config(tmp_path, photos, tiny_model_file, keep_shards=True, chunk_rows=4)
    command = [sys.executable, "-m", "imagerec", "--config", str(config), "index", "--executor", "ray",
               "--ray-address", ray_address, "-q"]
    work = tmp_path / "out" / "distributed"
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        first = wait_for_shard(proc, work)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    before = {p: p.read_bytes() for p in settled(first.parent)}
    assert not (tmp_path / "out" / "images.db").exists() or not stored(tmp_path / "out" / "images.db")[0]
    done_keys = keys(before)
    assert 0 < len(done_keys) < len(stored(local_db)[0]) + len(stored(local_db)[2])

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert_same_rows(tmp_path / "out" / "images.db", local_db)
    after = finished(first.parent)
    assert all(p.read_bytes() == data for p, data in before.items())  # earlier shards kept, not rewritten
    new_keys = keys({p: None for p in after if p not in before})
    assert not set(done_keys) & set(new_keys)  # nothing computed twice
    assert len(done_keys) + len(new_keys) == len(stored(local_db)[0]) + len(stored(local_db)[2])  # nothing lost


def wait_for_shard(proc: subprocess.Popen, work: Path, timeout: float = 120) -> Path:
    """The first complete shard the running job writes (the job must still be running)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the run ended before it was killed: {proc.stderr.read().decode()}"
        shards = finished(next(iter(work.glob("*/shards")), work / "none"))
        if shards:
            return shards[0]
        time.sleep(0.02)
    pytest.fail(f"no shard within {timeout} s")


def settled(shard_dir: Path, quiet_s: float = 3.0) -> list[Path]:
    """The complete shards once no file has appeared or changed for ``quiet_s`` (the killed job's tasks are gone)."""
    state, since = None, time.monotonic()
    while time.monotonic() - since < quiet_s:
        now = sorted((p.name, p.stat().st_size) for p in shard_dir.glob("*"))
        if now != state:
            state, since = now, time.monotonic()
        time.sleep(0.2)
    return finished(shard_dir)


def finished(shard_dir: Path) -> list[Path]:
    out = []
    for path in sorted(shard_dir.glob("*.parquet")) if shard_dir.is_dir() else []:
        try:
            pq.read_metadata(path)
            out.append(path)
        except Exception:  # still being written
            pass
    return out


def keys(shards) -> list[bytes]:
    return [k for p in shards for k in pq.read_table(p, columns=["key"]).column("key").to_pylist()]


def test_missing_ray_is_one_line(monkeypatch, photos, tmp_path, tiny_model_file):
    monkeypatch.setitem(sys.modules, "ray.data", None)  # what a plain install without the extra sees
    result = invoke("--config", str(make_config(tmp_path, photos, tiny_model_file)), "index", "--executor", "ray")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == ["error: index.executor: ray needs Ray (ray.data is not installed): "
                                                  "pip install 'imagerec[ray]'"]
