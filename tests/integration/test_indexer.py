"""The real indexer on real files: incremental re-runs, model changes, broken files, flat memory.

Every expectation is derived from the files themselves or from SQLite directly, never from the
summary alone: e.g. "a re-run decodes nothing" is proved by making every file undecodable while
keeping its (size, mtime), which would turn any decoded file into a skip record.
"""

from __future__ import annotations

import gc
import os
import shutil
import sqlite3
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import SAMPLE_DIR, TINY_MODEL_SIZE
from imagerec.embed.base import Preprocess
from imagerec.data import loading
from imagerec.config import load_config
from imagerec.data.features import HISTOGRAM_SIDE
from imagerec.embed import load_embedder
from imagerec.embed.files import ModelSpec, load_model, write_random_model
from imagerec.indexing.run import index_collection
from imagerec.progress import ProgressEvent

BINS = 8  # the default joint RGB histogram: 8x8x8 cells
SOLID = {  # file name -> colour; chosen mid-bin so the expected cell is unambiguous
    "solid/red.png": (200, 20, 20),
    "solid/green.png": (20, 200, 20),
    "solid/blue.png": (20, 20, 200),
    "solid/grey.png": (100, 100, 100),
}


def expected_cell(rgb: tuple[int, int, int], bins: int = BINS) -> int:
    """Index of the single histogram cell a solid colour falls into (computed here, not by imagerec)."""
    r, g, b = (c * bins // 256 for c in rgb)
    return (r * bins + g) * bins + b


def rows(db: Path) -> dict[bytes, dict]:
    """Every images row keyed by path, read straight from SQLite."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        cur = con.execute("SELECT path, id, size, mtime_ns, histogram, dhash, indexed_at, width, height FROM images")
        keys = ("id", "size", "mtime_ns", "histogram", "dhash", "indexed_at", "width", "height")
        return {r[0]: dict(zip(keys, r[1:])) for r in cur}
    finally:
        con.close()


def embeddings(db: Path) -> dict[bytes, tuple[str, bytes]]:
    """path -> (model_id, raw vector blob) for every stored embedding."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        cur = con.execute("SELECT i.path, e.model_id, e.vector FROM embeddings e JOIN images i ON i.id = e.image_id")
        return {r[0]: (r[1], r[2]) for r in cur}
    finally:
        con.close()


def query(db: Path, sql: str, *args) -> list[tuple]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def files_under(root: Path) -> set[bytes]:
    """Relative paths (bytes, '/'-separated) of every file under root."""
    return {os.fsencode(p.relative_to(root).as_posix()) for p in root.rglob("*") if p.is_file()}


def bump_mtime(path: Path, seconds: int = 10) -> None:
    """Move mtime clearly forward, so coarse file-system timestamps cannot hide the change."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 1_000_000_000))


def install_model(model_file: Path, config) -> None:
    config.output.dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(model_file, config.output.layout.model)


def histogram(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4")


@pytest.fixture
def collection(tmp_path, make_image):
    """12 small images: solid PNGs, noise PNGs and JPEGs, in nested folders."""
    root = tmp_path / "images"
    for name, colour in SOLID.items():
        make_image(root / name, size=(40, 30), color=colour)
    for i in range(4):
        make_image(root / "noise" / f"n{i}.png", size=(48, 36), seed=i)
    for i in range(4):
        make_image(root / "deep" / "er" / f"j{i}.jpg", size=(64, 48), seed=10 + i, quality=90)
    return root


@pytest.fixture
def config_for(write_config, tmp_path):
    """config_for(root) -> a validated Config with workers=2, batch_size=16, output under tmp_path/out."""

    def _make(root: Path):
        return load_config(write_config(root, runtime={"device": "cpu", "threads": 1}))

    return _make


def test_first_run_indexes_all_and_rerun_decodes_nothing(collection, config_for):
    config = config_for(collection)
    db = config.output.layout.db
    expected_paths = files_under(collection)
    events: list[ProgressEvent] = []

    first = index_collection(config, progress=events.append)
    assert (first.indexed, first.updated, first.unchanged, first.removed) == (len(expected_paths), 0, 0, 0)
    assert first.processed == len(expected_paths) and not first.skipped
    assert events and {e.stage for e in events} == {"index"}
    assert {e.total for e in events} == {len(expected_paths)}
    assert [e.done for e in events] == sorted(e.done for e in events)  # done only grows
    assert events[-1].done == len(expected_paths)
    stored = rows(db)
    assert set(stored) == expected_paths
    for name, colour in SOLID.items():
        hist = histogram(stored[name.encode()]["histogram"])
        assert hist.shape == (BINS**3,)
        assert hist[expected_cell(colour)] == pytest.approx(1.0)
        assert stored[name.encode()]["dhash"] == 0  # a flat image has no brighter neighbour anywhere
        assert (stored[name.encode()]["width"], stored[name.encode()]["height"]) == (40, 30)
    for row in stored.values():
        assert histogram(row["histogram"]).sum() == pytest.approx(1.0, abs=1e-5)

    second = index_collection(config)
    assert second.processed == 0
    assert (second.indexed, second.updated, second.unchanged, second.removed) == (0, 0, len(expected_paths), 0)

    # Proof that nothing is decoded: make every file garbage with the same size and mtime. Any file the
    # indexer opened would now become a skip record.
    for rel in expected_paths:
        path = collection / os.fsdecode(rel)
        st = path.stat()
        path.write_bytes(b"\0" * st.st_size)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    third = index_collection(config)
    assert third.processed == 0 and not third.skipped and third.unchanged == len(expected_paths)
    assert rows(db) == stored
    assert query(db, "SELECT COUNT(*) FROM skipped") == [(0,)]


def test_modified_file_is_updated_in_place(collection, config_for, make_image):
    config = config_for(collection)
    db = config.output.layout.db
    index_collection(config)
    before = rows(db)
    target = collection / "solid/red.png"
    make_image(target, size=(40, 30), color=(20, 200, 200))  # now cyan
    bump_mtime(target)

    summary = index_collection(config)
    assert (summary.indexed, summary.updated, summary.unchanged, summary.removed) == (0, 1, len(before) - 1, 0)
    assert summary.processed == 1
    after = rows(db)
    key = b"solid/red.png"
    assert after[key]["id"] == before[key]["id"]
    assert after[key]["histogram"] != before[key]["histogram"]
    assert histogram(after[key]["histogram"])[expected_cell((20, 200, 200))] == pytest.approx(1.0)
    assert after[key]["mtime_ns"] == target.stat().st_mtime_ns
    for other in set(before) - {key}:
        assert after[other] == before[other]

    # Touched but not changed: recomputed (mtime differs), same id, same features.
    touched = collection / "noise/n0.png"
    bump_mtime(touched)
    summary = index_collection(config)
    assert (summary.indexed, summary.updated, summary.processed) == (0, 1, 1)
    again = rows(db)
    assert again[b"noise/n0.png"]["id"] == after[b"noise/n0.png"]["id"]
    assert again[b"noise/n0.png"]["histogram"] == after[b"noise/n0.png"]["histogram"]
    assert again[b"noise/n0.png"]["mtime_ns"] == touched.stat().st_mtime_ns


def test_deleted_file_is_removed_and_new_file_added(collection, config_for, make_image):
    config = config_for(collection)
    db = config.output.layout.db
    index_collection(config)
    before = rows(db)
    gone = collection / "noise/n2.png"
    gone.unlink()

    summary = index_collection(config)
    assert (summary.removed, summary.indexed, summary.updated, summary.unchanged) == (1, 0, 0, len(before) - 1)
    after = rows(db)
    assert b"noise/n2.png" not in after and set(after) == files_under(collection)

    make_image(collection / "new/added.png", size=(40, 30), color=(200, 200, 20))
    make_image(gone, size=(48, 36), seed=2)  # the deleted path comes back: a new image, a new id
    summary = index_collection(config)
    assert (summary.indexed, summary.updated, summary.removed, summary.unchanged) == (2, 0, 0, len(before) - 1)
    final = rows(db)
    assert set(final) == files_under(collection)
    old_max = max(r["id"] for r in before.values())
    assert final[b"new/added.png"]["id"] > old_max
    assert final[b"noise/n2.png"]["id"] > old_max  # ids of removed images are never reused
    for other in set(after):
        assert final[other]["id"] == before[other]["id"]


def test_model_arrival_and_change_recompute_only_embeddings(collection, config_for, tiny_model_file):
    config = config_for(collection)
    db = config.output.layout.db
    n = len(files_under(collection))

    no_model = index_collection(config)
    assert no_model.model_missing and no_model.model_id is None and no_model.indexed == n
    assert embeddings(db) == {}
    before = rows(db)

    install_model(tiny_model_file, config)
    tiny_id = load_model(tiny_model_file).model_id
    with_model = index_collection(config)
    assert not with_model.model_missing and with_model.model_id == tiny_id
    assert (with_model.embedded, with_model.indexed, with_model.updated, with_model.removed) == (n, 0, 0, 0)
    assert rows(db) == before  # histograms, hashes and indexed_at byte-identical: rows were not rewritten
    first_vectors = embeddings(db)
    assert set(first_vectors) == set(before)
    assert {model_id for model_id, _ in first_vectors.values()} == {tiny_id}
    assert query(db, "SELECT value FROM meta WHERE key = 'model_id'") == [(tiny_id,)]

    again = index_collection(config)
    assert again.processed == 0 and again.unchanged == n

    new_id = write_random_model(config.output.layout.model, ModelSpec(image_size=TINY_MODEL_SIZE), seed=1)
    assert new_id != tiny_id
    changed = index_collection(config)
    assert changed.model_id == new_id
    assert (changed.embedded, changed.indexed, changed.updated, changed.removed) == (n, 0, 0, 0)
    assert rows(db) == before
    second_vectors = embeddings(db)
    assert set(second_vectors) == set(before)
    assert {model_id for model_id, _ in second_vectors.values()} == {new_id}
    assert all(second_vectors[p][1] != first_vectors[p][1] for p in before)
    assert query(db, "SELECT value FROM meta WHERE key = 'model_id'") == [(new_id,)]


def test_embeddings_match_the_query_path(tmp_path, config_for, tiny_model_file):
    """Stored embeddings equal Embedder(load_image + model_input) on the same file: query == index."""
    root = tmp_path / "photos"
    picks = sorted(SAMPLE_DIR.rglob("*.jpg"))[::50][:6]
    for src in picks:
        dest = root / src.relative_to(SAMPLE_DIR)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dest)
    config = config_for(root)
    install_model(tiny_model_file, config)
    summary = index_collection(config)
    assert summary.indexed == len(picks)

    stored = embeddings(config.output.layout.db)
    assert len(stored) == len(picks)
    model = load_model(tiny_model_file)
    embedder = load_embedder(tiny_model_file, device="cpu")
    settings = loading.LoadSettings(config.index.formats, config.index.max_image_pixels,
                                    min_side=max(model.spec.image_size, HISTOGRAM_SIDE // 2))
    rels = sorted(stored)
    pixels = [Preprocess(model.spec.image_size)(loading.load_image(root / os.fsdecode(rel), settings, "JPEG").image)
              for rel in rels]
    expected = embedder.embed(np.stack(pixels))
    got = []
    for rel in rels:
        model_id, blob = stored[rel]
        assert model_id == model.model_id
        assert len(blob) == 512 * 4  # 512 float32
        vector = np.frombuffer(blob, dtype="<f4")
        assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
        got.append(vector)
    got = np.stack(got)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    # The comparison is meaningful: each stored vector is nearest to its own recomputation.
    distances = np.linalg.norm(got[:, None, :] - expected[None, :, :], axis=2)
    assert list(distances.argmin(axis=1)) == list(range(len(rels)))
    assert np.min(distances + np.eye(len(rels)) * 10) > 1e-4


def test_broken_and_fixed_files_move_between_images_and_skip_records(collection, config_for, tiny_model_file):
    config = config_for(collection)
    db = config.output.layout.db
    install_model(tiny_model_file, config)
    jpeg = (collection / "deep/er/j0.jpg").read_bytes()
    truncated = collection / "late/truncated.jpg"
    truncated.parent.mkdir()
    truncated.write_bytes(jpeg[: len(jpeg) // 2])
    n_good = len(files_under(collection)) - 1

    first = index_collection(config)
    assert first.indexed == n_good and sum(first.skipped.values()) == 1
    assert query(db, "SELECT path FROM skipped") == [(b"late/truncated.jpg",)]
    before = rows(db)
    assert b"late/truncated.jpg" not in before

    # An indexed file breaks: its image row (and embedding) go, a skip record with a reason appears.
    victim = collection / "noise/n1.png"
    victim.write_bytes(b"this is not a PNG any more " * 20)
    bump_mtime(victim)
    broke = index_collection(config)
    assert sum(broke.skipped.values()) == 1 and (broke.indexed, broke.updated) == (0, 0)
    assert broke.skipped_known == 1  # the truncated file is not decoded again
    after = rows(db)
    assert b"noise/n1.png" not in after and len(after) == n_good - 1
    skips = dict(((p, (r, d)) for p, r, d in query(db, "SELECT path, reason, detail FROM skipped")))
    assert set(skips) == {b"noise/n1.png", b"late/truncated.jpg"}
    assert skips[b"noise/n1.png"][0] in {loading.UNIDENTIFIED, loading.CORRUPT} and skips[b"noise/n1.png"][1]
    assert skips[b"late/truncated.jpg"][0] in {loading.TRUNCATED, loading.CORRUPT}
    assert set(embeddings(db)) == set(after)  # no orphaned embedding

    steady = index_collection(config)
    assert steady.processed == 0 and steady.skipped_known == 2

    # Both are fixed: they become images, their skip records go.
    Image.fromarray(np.full((36, 48, 3), 77, np.uint8)).save(victim)
    bump_mtime(victim, 20)
    truncated.write_bytes(jpeg)
    bump_mtime(truncated)
    fixed = index_collection(config)
    assert (fixed.indexed, fixed.updated, sum(fixed.skipped.values())) == (2, 0, 0)
    final = rows(db)
    assert set(final) == files_under(collection)
    assert query(db, "SELECT COUNT(*) FROM skipped") == [(0,)]
    assert set(embeddings(db)) == set(final)
    assert histogram(final[b"noise/n1.png"]["histogram"])[expected_cell((77, 77, 77))] == pytest.approx(1.0)


def _generate(root: Path, n: int) -> None:
    """n tiny noise PNGs, 50 per folder: the scan holds one folder's listing, so folder size stays fixed."""
    rng = np.random.default_rng(n)
    for i in range(n):
        path = root / f"d{i // 50:03d}" / f"{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(path)


def test_peak_memory_does_not_grow_with_collection_size(tmp_path):
    """Peak Python heap of the indexing process at 300 vs 1200 images (workers are separate processes).

    tracemalloc counts allocations, so unlike RSS it is not disturbed by other load on the machine.
    Holding one 512-cell histogram (2 KB) per image would add ~1.8 MB between the two runs; the bound
    leaves room for the bounded queues and the planner's fixed-size chunk (and timing-dependent queue
    depths).
    """
    import yaml

    def run(n: int, name: str) -> int:
        root = tmp_path / name
        _generate(root, n)
        cfg = tmp_path / f"{name}.yaml"
        cfg.write_text(yaml.safe_dump({"data": {"image_root": str(root)}, "output": {"dir": str(tmp_path / f"out-{name}")},
                                       "index": {"workers": 2, "batch_size": 16}, "model": {"arch": "resnet18", "init": "random"}}))
        config = load_config(cfg)
        gc.collect()
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        summary = index_collection(config)
        peak = tracemalloc.get_traced_memory()[1] - base
        assert summary.indexed == n
        return peak

    tracemalloc.start()
    try:
        run(20, "warmup")  # imports and one-time caches
        small = run(300, "small")
        large = run(1200, "large")
    finally:
        tracemalloc.stop()
    growth = large - small
    assert growth < 1_000_000, f"peak grew by {growth / 1e3:.0f} kB from 300 to 1200 images ({small / 1e3:.0f} -> {large / 1e3:.0f} kB)"


def test_histogram_settings_change_recomputes_features_in_place(collection, write_config):
    config = load_config(write_config(collection))
    index_collection(config)
    before = rows(config.output.layout.db)
    coarser = load_config(write_config(collection, features={"histogram": {"space": "rgb", "bins": 4}}))
    summary = index_collection(coarser)
    assert (summary.indexed, summary.updated, summary.unchanged) == (0, len(before), 0)
    after = rows(config.output.layout.db)
    assert {p: r["id"] for p, r in after.items()} == {p: r["id"] for p, r in before.items()}
    for name, colour in SOLID.items():
        hist = histogram(after[name.encode()]["histogram"])
        assert hist.shape == (4**3,) and hist[expected_cell(colour, 4)] == pytest.approx(1.0)
    assert index_collection(coarser).processed == 0


def test_workers_that_cannot_start_are_an_error_not_broken_images(tmp_path, make_image, write_config):
    """A script without a __main__ guard makes every spawned worker die on start-up: no image is to blame."""
    for i in range(4):
        make_image(tmp_path / "photos" / f"{i}.png", seed=i)
    config_path = write_config(tmp_path / "photos")
    script = tmp_path / "unguarded.py"
    script.write_text(
        "import imagerec\n"
        "from imagerec.errors import ImagerecError\n"
        f"config = imagerec.load_config({str(config_path)!r})\n"
        "try:\n"
        "    imagerec.index(config)\n"
        "except ImagerecError as exc:\n"
        "    print('REFUSED:', exc)\n"
    )
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert "REFUSED:" in done.stdout and "__main__" in done.stdout
    db = load_config(config_path).output.layout.db
    assert query(db, "SELECT COUNT(*) FROM skipped") == [(0,)]  # nothing recorded as a broken image
