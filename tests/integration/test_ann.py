"""build-ann and safe loading: real FAISS index, real SQLite, real photos (sample/caltech101-mini).

Moved from tests/test_ann.py when the ANN stage became a backend seam (manifest ann.json + build-unique
index files); every earlier assertion is kept, adapted to the new files.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from ann_support import index_and_build, run_cli, sample_collection, write_collection_config
from imagerec.ann import AnnIndex, AnnIndexError, BuildSummary, build_ann, file_hashes, files, load_ann, read_metadata
from imagerec.ann.hnsw import auto_ef_search
from imagerec.atomic import fsync_file
from imagerec.data.features import HistogramSpec
from imagerec.progress import ProgressEvent
from imagerec.store import ImageRecord, Store
from imagerec.tools.status import collection_status


@pytest.fixture(scope="module")
def sample(tmp_path_factory, tiny_model_file):
    return sample_collection(tmp_path_factory, tiny_model_file)


def _copy_collection(sample, tmp_path):
    """A private copy of the sample's output folder (DB + index), same image root."""
    out = tmp_path / "out"
    shutil.copytree(sample.out, out)
    return sample.config().with_overrides({"output.dir": out})


def _copy_with_config_file(sample, tmp_path):
    config = _copy_collection(sample, tmp_path)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(sample.config_path.read_text().replace(str(sample.out), str(config.output.dir)))
    return config, cfg


def _index_file(config):
    """The one file of the (hnsw) index the manifest names."""
    (entry,) = read_metadata(config).files
    return config.output.layout.ann_file(entry.name)


def _ann_names(config):
    """The ANN files in output.dir, but the build lock (an empty file that stays)."""
    return sorted(p.name for p in config.output.dir.iterdir() if p.name.startswith("ann") and p.name != "ann.lock")


def _exact_top(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    sims = queries @ unit.T
    return ids[np.argsort(-sims, axis=1, kind="stable")[:, :k]]


def _probe(index, n=20, k=10):
    rng = np.random.default_rng(3)
    q = rng.normal(size=(n, index.dim)).astype(np.float32)
    return index.search(q / np.linalg.norm(q, axis=1, keepdims=True), k)


def test_build_metadata_and_labels(sample):
    config = sample.config()
    meta = read_metadata(config)
    with Store(config.output.layout.db, readonly=True) as store:
        model_id = store.get_meta("model_id")
        ids = store.embedding_ids(model_id)
        assert meta.count == len(ids) == 300
        assert meta.max_image_id == int(ids.max())
        assert meta.data_version == store.data_version
    assert meta.model_id == model_id and meta.dim == 512 and meta.metric == "inner_product"
    assert meta.library == "faiss" and meta.library_version and meta.kind == "hnsw"
    assert meta.format == "imagerec.ann" and meta.format_version == 2
    assert meta.params["M"] == config.ann.hnsw.M and meta.params["ef_construction"] == config.ann.hnsw.ef_construction
    assert meta.params["ef_search"] == config.ann.hnsw.ef_search and meta.params["threads"] == 2
    raw = json.loads(config.output.layout.ann_manifest.read_text())
    assert raw["files"] == [{"name": f.name, "size": f.size, "sha256": f.sha256, "sample_sha256": f.sample_sha256,
                             "inode": f.inode, "mtime_ns": f.mtime_ns} for f in meta.files]
    (entry,) = meta.files
    assert entry.name.startswith("ann_hnsw.") and entry.name.endswith(".bin")
    assert entry.size == _index_file(config).stat().st_size == meta.size_bytes and len(entry.sha256) == 64
    assert _ann_names(config) == sorted(["ann.json", entry.name])  # nothing else: no temporaries, no legacy
    index = load_ann(config, model_id=model_id, dim=512)
    assert np.array_equal(np.sort(index.labels()), ids)  # labels are image ids
    assert index.labels() is index.labels() and not index.labels().flags.writeable
    assert config.ann.hnsw.ef_search is None and index.ef_search == auto_ef_search(300)  # chosen from the size
    assert index.count == 300 and index.dim == 512
    assert isinstance(index, AnnIndex) and index.default_params == {"ef_search": index.ef_search}
    configured = config.with_overrides({"ann.hnsw.ef_search": 48})
    assert load_ann(configured, model_id=model_id, dim=512).ef_search == 48  # a configured beam width wins
    report = collection_status(config)
    assert report.ann["state"] == "current" and report.ann["count"] == 300 and report.ann["kind"] == "hnsw"
    assert report.ann["path"] == str(config.output.layout.ann_manifest)


def test_recall_against_numpy_exact(sample):
    config = sample.config()
    with Store(config.output.layout.db, readonly=True) as store:
        model_id = store.get_meta("model_id")
        ids, vectors = next(store.iter_embeddings(model_id, chunk_size=10_000))
    index = load_ann(config, model_id=model_id)
    queries = vectors[::5] / np.linalg.norm(vectors[::5], axis=1, keepdims=True)
    _, found = index.search(queries, 10)
    truth = _exact_top(vectors, ids, queries, 10)
    recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)])
    assert recall >= 0.99


def _synthetic_store(tmp_path, vectors: np.ndarray, chunk: int = 1000, ann: dict | None = None):
    from imagerec.config import Config

    config = Config.model_validate({"data": {"image_root": tmp_path}, "output": {"dir": tmp_path / "out"},
                                    "ann": {"threads": 2, "build_chunk": chunk, **(ann or {})}, "model": {"arch": "resnet18", "init": "random"}})
    spec = HistogramSpec()
    hist = np.full(spec.size, 1.0 / spec.size, dtype=np.float32)
    with Store(config.output.layout.db) as store:
        store.set_meta("model_id", "synthetic")
        records = [ImageRecord(f"img{i:05d}.jpg".encode(), 1, 1, 8, 8, "JPEG", hist, spec.key, i, v, "synthetic")
                   for i, v in enumerate(vectors)]
        for start in range(0, len(records), 1000):
            store.write_batch(records[start : start + 1000])
    return config


def _clustered(n=3000, dim=512, noise=0.6, seed=1):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(30, dim)).astype(np.float32)
    return centres[rng.integers(0, 30, n)] + noise * rng.normal(size=(n, dim)).astype(np.float32)


def test_recall_on_clustered_vectors(tmp_path):
    """3,000 clustered dim-512 vectors through the real store: recall@10 at the default ef_search."""
    config = _synthetic_store(tmp_path, _clustered())
    events: list[ProgressEvent] = []
    summary = build_ann(config, progress=events.append)
    assert isinstance(summary, BuildSummary) and summary.path == config.output.layout.ann_manifest
    assert [(e.stage, e.done, e.total) for e in events] == [("build-ann", 1000 * i, 3000) for i in (1, 2, 3)]
    assert json.loads(json.dumps(summary.to_dict()))["metadata"]["count"] == 3000
    with Store(config.output.layout.db, readonly=True) as store:
        ids, stored = next(store.iter_embeddings("synthetic", chunk_size=10_000))
    index = load_ann(config, model_id="synthetic")
    queries = stored[::15] / np.linalg.norm(stored[::15], axis=1, keepdims=True)
    _, found = index.search(queries, 10)
    truth = _exact_top(stored, ids, queries, 10)
    assert np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)]) >= 0.99


def test_per_call_ef_search_is_not_shared_state(tmp_path):
    """Two threads searching in parallel with different ef_search each get their single-threaded answer."""
    config = _synthetic_store(tmp_path, _clustered(n=4000, dim=64, noise=1.5, seed=2), ann={"hnsw": {"M": 8}})
    build_ann(config)
    index = load_ann(config, model_id="synthetic")
    rng = np.random.default_rng(5)
    queries = rng.normal(size=(40, 64)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    default = index.search(queries, 10)
    alone = {ef: index.search(queries, 10, ef_search=ef) for ef in (10, 1000)}
    assert not np.array_equal(alone[10][1], alone[1000][1]), "ef_search must matter for this test to mean anything"
    barrier, mismatches = threading.Barrier(2), []

    def worker(ef):
        barrier.wait()
        for _ in range(60):
            scores, ids = index.search(queries, 10, ef_search=ef)
            if not (np.array_equal(ids, alone[ef][1]) and np.array_equal(scores, alone[ef][0])):
                mismatches.append(ef)

    threads = [threading.Thread(target=worker, args=(ef,)) for ef in alone]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not mismatches
    assert index.ef_search == auto_ef_search(4000)
    assert all(np.array_equal(a, b) for a, b in zip(index.search(queries, 10), default))  # default unchanged


def test_load_and_search_leave_faiss_threads_alone(sample):
    import faiss

    before = faiss.omp_get_max_threads()
    index = load_ann(sample.config(), model_id=None)
    _probe(index)
    assert faiss.omp_get_max_threads() == before


DAMAGE = ["truncate", "wrong_model", "wrong_dim", "wrong_metric", "wrong_kind", "flip_bytes", "bad_json", "no_meta",
          "nested_json", "not_a_dict", "string_format_version", "missing_key", "file_missing"]


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_index_is_refused(sample, tmp_path, damage):
    config = _copy_collection(sample, tmp_path)
    path, meta_path = _index_file(config), config.output.layout.ann_manifest
    meta = json.loads(meta_path.read_text())
    size = meta["files"][0]["size"]
    if damage == "truncate":
        with open(path, "r+b") as fh:
            fh.truncate(size // 2)
    elif damage in ("wrong_model", "wrong_dim", "wrong_metric", "wrong_kind", "string_format_version"):
        key, value = {"wrong_model": ("model_id", "0123456789abcdef"), "wrong_dim": ("dim", 256),
                      "wrong_metric": ("metric", "l2"), "wrong_kind": ("kind", "ivf"),
                      "string_format_version": ("format_version", "2")}[damage]
        meta[key] = value
        meta_path.write_text(json.dumps(meta))
    elif damage == "flip_bytes":
        with open(path, "r+b") as fh:
            fh.seek(size // 2)
            chunk = fh.read(64)
            fh.seek(size // 2)
            fh.write(bytes(b ^ 0xFF for b in chunk))
    elif damage == "bad_json":
        meta_path.write_text("{not json")
    elif damage == "nested_json":
        meta_path.write_text("[" * 100_000 + "]" * 100_000)
    elif damage == "not_a_dict":
        meta_path.write_text(json.dumps([meta]))
    elif damage == "missing_key":
        del meta["count"]
        meta_path.write_text(json.dumps(meta))
    elif damage == "file_missing":
        path.unlink()
    else:
        meta_path.unlink()
    right_model = json.loads((sample.out / "ann.json").read_text())["model_id"]
    with pytest.raises(AnnIndexError, match="build-ann"):
        load_ann(config, model_id=right_model, dim=512)
    state = collection_status(config).ann
    expected = {"truncate": "damaged: ", "flip_bytes": "damaged: ", "file_missing": "damaged: ", "no_meta": None,
                "bad_json": "unreadable metadata", "nested_json": "unreadable metadata", "not_a_dict": "unreadable metadata",
                "string_format_version": "unreadable metadata", "missing_key": "unreadable metadata"}
    if damage in expected:
        assert (state is None) if expected[damage] is None else state["state"].startswith(expected[damage]), state
    if state is not None and state["state"].startswith(("damaged", "unreadable")):
        assert state["state"].endswith("run 'build-ann' again")


def test_corrupt_index_via_cli_is_one_line_error_not_a_crash(sample, tmp_path):
    """Even an index whose metadata checksum was 'fixed up' must not crash the process (subprocess)."""
    config, cfg = _copy_with_config_file(sample, tmp_path)
    path, meta_path = _index_file(config), config.output.layout.ann_manifest
    raw = bytearray(path.read_bytes())
    raw[100:4000] = os.urandom(3900)  # header and the start of the graph
    path.write_bytes(bytes(raw))
    result = run_cli(cfg, "query", "--id", "1")
    assert result.returncode == 1, result.stderr
    assert "build-ann" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    # now make the metadata agree with the damaged file: FAISS itself must refuse, still no signal
    meta = json.loads(meta_path.read_text())
    full, sample_hash = file_hashes(path)
    st = path.stat()
    meta["files"][0].update(sha256=full, sample_sha256=sample_hash, size=st.st_size)
    meta_path.write_text(json.dumps(meta))
    result = run_cli(cfg, "query", "--id", "1")
    assert result.returncode >= 0, f"crashed with signal {-result.returncode}"
    assert "Traceback" not in result.stderr


def test_no_index_yet(sample, tmp_path):
    config = _copy_collection(sample, tmp_path)
    _index_file(config).unlink()
    config.output.layout.ann_manifest.unlink()
    with pytest.raises(AnnIndexError, match="no ANN index yet.*build-ann"):
        load_ann(config, model_id=None)
    assert collection_status(config).ann is None


def test_legacy_index_asks_for_a_rebuild(sample, tmp_path):
    """ann_hnsw.bin/.json of the previous imagerec, no ann.json: a clear message; build-ann replaces them."""
    config = _copy_collection(sample, tmp_path)
    out = config.output.dir
    os.replace(_index_file(config), out / "ann_hnsw.bin")
    os.replace(config.output.layout.ann_manifest, out / "ann_hnsw.json")
    with pytest.raises(AnnIndexError, match="ANN index was built by an older imagerec; run 'build-ann' again"):
        load_ann(config, model_id=None)
    assert collection_status(config).ann["state"] == "built by an older imagerec: run 'build-ann' again"
    summary = build_ann(config)
    assert "ann_hnsw.bin" in summary.removed and "ann_hnsw.json" in summary.removed
    assert _ann_names(config) == sorted(["ann.json", summary.metadata.files[0].name])
    assert load_ann(config, model_id=None).count == 300


def test_wrong_dimension_query_is_an_error_not_a_segfault(sample):
    config = sample.config()
    index = load_ann(config, model_id=None)
    with pytest.raises(AnnIndexError, match="dimension"):
        index.search(np.ones((1, 256), np.float32), 5)
    with pytest.raises(AnnIndexError, match="NaN"):
        index.search(np.full((1, 512), np.nan, np.float32), 5)
    scores, ids = index.search(np.ones(512, np.float32) / np.sqrt(512), 10_000)  # k > count is clamped
    assert ids.shape == (1, 300) and (ids >= 0).all() and scores.dtype == np.float32 and ids.dtype == np.int64
    assert index.search(np.ones(512, np.float32), 0)[1].shape == (1, 0)


def test_failed_write_keeps_previous_index(sample, tmp_path, monkeypatch):
    """The new index's temp file is complete and fsynced, then the write fails (disk full): old index stays."""
    config = _copy_collection(sample, tmp_path)
    before = read_metadata(config)
    before_bytes = _index_file(config).read_bytes()
    names = _ann_names(config)
    written = []

    def fsync_then_fail(tmp, target):
        fsync_file(tmp)
        written.append(os.path.getsize(tmp))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files, "commit", fsync_then_fail)
    with pytest.raises(AnnIndexError, match="No space left.*previous index is unchanged"):
        build_ann(config)
    monkeypatch.undo()
    assert written and written[0] > 0
    assert read_metadata(config) == before and _index_file(config).read_bytes() == before_bytes
    assert load_ann(config, model_id=before.model_id).count == before.count
    assert _ann_names(config) == names  # no temporaries, no half-built files


def test_manifest_write_failure_keeps_previous_index(sample, tmp_path, monkeypatch):
    """The new index file is complete under its new name, then writing ann.json fails: old index answers."""
    import imagerec.ann.build as build_module

    config = _copy_collection(sample, tmp_path)
    before, names = read_metadata(config), _ann_names(config)
    answer = _probe(load_ann(config, model_id=None))
    seen = []

    def fail(layout, meta):
        seen.extend(p.name for p in layout.root.iterdir() if p.name == meta.files[0].name)
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(build_module, "write_manifest", fail)
    with pytest.raises(AnnIndexError, match="Input/output error.*previous index is unchanged"):
        build_ann(config)
    monkeypatch.undo()
    assert seen, "the new index file was on disk when the manifest was written"
    assert read_metadata(config) == before and _ann_names(config) == names
    again = _probe(load_ann(config, model_id=None))
    assert all(np.array_equal(a, b) for a, b in zip(answer, again))


def test_kill_between_index_file_and_manifest(sample, tmp_path):
    """SIGKILL right before the commit point: the previous index still loads and answers identically;
    the next build removes the orphan file and the previous index's file."""
    config, cfg = _copy_with_config_file(sample, tmp_path)
    before, old_names = read_metadata(config), _ann_names(config)
    answer = _probe(load_ann(config, model_id=None))
    script = textwrap.dedent("""
        import os, signal, sys
        import imagerec.ann.build as build
        from imagerec.config import load_config
        build.write_manifest = lambda layout, meta: os.kill(os.getpid(), signal.SIGKILL)
        build.build_ann(load_config(sys.argv[1]))
    """)
    proc = subprocess.run([sys.executable, "-c", script, str(cfg)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    orphans = sorted(set(_ann_names(config)) - set(old_names))
    assert len(orphans) == 1 and orphans[0].startswith("ann_hnsw.") and orphans[0].endswith(".bin")
    assert read_metadata(config) == before
    again = _probe(load_ann(config, model_id=None))
    assert all(np.array_equal(a, b) for a, b in zip(answer, again))
    assert collection_status(config).ann["state"] == "current"
    summary = build_ann(config)
    assert orphans[0] in summary.removed and before.files[0].name in summary.removed
    assert _ann_names(config) == sorted(["ann.json", summary.metadata.files[0].name])


def test_load_racing_a_build_reads_the_new_index(sample, tmp_path, monkeypatch):
    """A build replaced ann.json and removed the old file between our manifest read and our file check."""
    import imagerec.ann.load as load_module

    config = _copy_collection(sample, tmp_path)
    old = read_metadata(config)
    build_ann(config)
    new = read_metadata(config)
    real, calls = load_module.read_manifest, []

    def first_stale(layout):
        calls.append(1)
        return old if len(calls) == 1 else real(layout)

    monkeypatch.setattr(load_module, "read_manifest", first_stale)
    index = load_ann(config, model_id=None)
    assert index.meta == new and len(calls) >= 2


def test_next_build_removes_stale_temporaries_and_unreferenced_files(sample, tmp_path):
    config = _copy_collection(sample, tmp_path)
    out = config.output.dir
    leftovers = ["ann.json.a1b2c3.tmp", "ann_hnsw.20200101000000-deadbeef.bin",
                 "ann_hnsw.20200101000000-deadbeef.bin.x9y8.tmp", "ann_hnsw.bin.q7w6.tmp"]
    for name in leftovers:
        (out / name).write_bytes(b"left by a killed build")
    (out / "annotations.csv").write_text("not ours")
    previous = read_metadata(config).files[0].name
    summary = build_ann(config)
    assert set(leftovers) | {previous} <= set(summary.removed)
    assert _ann_names(config) == sorted(["ann.json", "annotations.csv", summary.metadata.files[0].name])
    assert summary.metadata.files[0].name != previous


def test_one_build_at_a_time(sample, tmp_path):
    import fcntl

    config = _copy_collection(sample, tmp_path)
    before = read_metadata(config)
    with open(config.output.dir / "ann.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running build-ann holds it
        with pytest.raises(AnnIndexError, match="another 'build-ann' is running"):
            build_ann(config)
    assert read_metadata(config) == before
    assert build_ann(config).metadata.count == 300  # released: the next build runs


def test_build_on_empty_collection_is_refused(tmp_path, make_image, tiny_model_file):
    root = tmp_path / "images"
    root.mkdir()
    collection = write_collection_config(tmp_path, root, tiny_model_file)
    from imagerec.indexing.run import index_collection

    index_collection(collection.config())
    with pytest.raises(AnnIndexError, match="no embeddings"):
        build_ann(collection.config())
    result = run_cli(collection.config_path, "build-ann")
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_cli_build_ann_prints_the_facts(sample, tmp_path):
    config, cfg = _copy_with_config_file(sample, tmp_path)
    result = run_cli(cfg, "build-ann")
    assert result.returncode == 0, result.stderr
    m = read_metadata(config)
    for fact in ("300 images", "dim 512", f"model {m.model_id}", f"M={m.params['M']}",
                 f"ef_construction={m.params['ef_construction']}", f"ef_search={m.params['ef_search'] or 'auto'}", " MB in "):
        assert fact in result.stdout, result.stdout


def test_stale_index_finds_new_images_and_hides_removed(tmp_path, make_image, tiny_model_file):
    from imagerec.search.recommender import run_query

    root = tmp_path / "images"
    for i in range(12):
        make_image(root / "a" / f"img{i:02d}.png", size=(40, 40), seed=i)
    collection = write_collection_config(tmp_path, root, tiny_model_file)
    index_and_build(collection)
    config = collection.config()
    with Store(config.output.layout.db, readonly=True) as store:
        removed_id = store.find_by_path(b"a/img03.png")
        query_id = store.find_by_path(b"a/img00.png")
    (root / "a" / "img03.png").unlink()
    shutil.copy(root / "a" / "img00.png", root / "b_copy.png")  # new image, identical to the query
    make_image(root / "c" / "new.png", size=(40, 40), seed=99)
    from imagerec.indexing.run import index_collection

    index_collection(config)
    with Store(config.output.layout.db, readonly=True) as store:
        copy_id = store.find_by_path(b"b_copy.png")
        new_id = store.find_by_path(b"c/new.png")
    assert collection_status(config).ann["state"] == "stale"
    response = run_query(config, ids=[query_id], top_k=50)
    found = [r.id for r in response.results]
    assert removed_id not in found
    assert found[0] == copy_id and response.results[0].near_duplicate
    assert new_id in found and len(found) == 12  # 12 images now, minus the query itself, plus... all present
    assert any("rebuild advised" in n for n in response.notices)
    build_ann(config)
    response = run_query(config, ids=[query_id], top_k=50)
    assert not response.notices and removed_id not in [r.id for r in response.results]


def test_nan_overwrite_outside_the_sampled_blocks_is_refused_under_verify_auto(sample, tmp_path, monkeypatch):
    """verify: auto hashes a sample of a big file's blocks; the vectors themselves are checked on every load."""
    import imagerec.ann.files as ann_files

    monkeypatch.setattr(ann_files, "FULL_HASH_MAX_BYTES", 1)  # every index counts as big: sampled hash only
    monkeypatch.setattr(ann_files, "_EDGE_BYTES", 4096)  # and the sample leaves most of this small one out
    monkeypatch.setattr(ann_files, "_SAMPLE_BLOCKS", 4)
    config = _copy_collection(sample, tmp_path)
    build_ann(config)
    meta = read_metadata(config)
    load_ann(config, model_id=meta.model_id)  # loads before the damage
    path = config.output.layout.ann_file(meta.files[0].name)
    data = bytearray(path.read_bytes())
    sampled = ann_files._sample_ranges(len(data))
    width = 1024
    offset = next(o for o in range(len(data) // 4, len(data) - width)
                  if not any(a < o + width and o < a + n for a, n in sampled))
    data[offset:offset + width] = np.full(width // 4, np.nan, dtype=np.float32).tobytes()
    st = os.stat(path)
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # looks untouched: same size, inode and mtime
    assert ann_files.file_problem(path, meta.files[0], "auto") is None  # the sampled checksum cannot see it
    with pytest.raises(AnnIndexError, match="not a unit vector"):
        load_ann(config, model_id=meta.model_id)
