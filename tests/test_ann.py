"""build-ann and safe loading: real FAISS index, real SQLite, real photos (sample/caltech101-mini)."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from ann_support import index_and_build, run_cli, sample_collection, write_collection_config
from imagerec.ann import hnsw as ann
from imagerec.ann.hnsw import AnnIndexError, build_ann, load_ann, read_metadata
from imagerec.data.features import HistogramSpec
from imagerec.tools.status import ann_metadata_path, collection_status
from imagerec.store import ImageRecord, Store


@pytest.fixture(scope="module")
def sample(tmp_path_factory, tiny_model_file):
    return sample_collection(tmp_path_factory, tiny_model_file)


def _copy_collection(sample, tmp_path):
    """A private copy of the sample's output folder (DB + index), same image root."""
    out = tmp_path / "out"
    shutil.copytree(sample.out, out)
    config = sample.config().with_overrides({"output.dir": out})
    return config


def _exact_top(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    sims = queries @ unit.T
    return ids[np.argsort(-sims, axis=1, kind="stable")[:, :k]]


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
    assert meta.library == "faiss" and meta.library_version
    assert meta.params["M"] == config.ann.hnsw.M and meta.params["ef_construction"] == config.ann.hnsw.ef_construction
    assert meta.file_size == config.output.layout.ann_file('ann_hnsw.bin').stat().st_size and len(meta.file_sha256) == 64
    index = load_ann(config, model_id=model_id, dim=512)
    assert np.array_equal(np.sort(index.labels()), ids)  # labels are image ids
    report = collection_status(config)
    assert report.ann["state"] == "current" and report.ann["count"] == 300


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


def test_recall_on_clustered_vectors(tmp_path):
    """3,000 clustered dim-512 vectors through the real store: recall@10 at the default ef_search."""
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(30, 512)).astype(np.float32)
    vectors = centres[rng.integers(0, 30, 3000)] + 0.6 * rng.normal(size=(3000, 512)).astype(np.float32)
    config = _synthetic_store(tmp_path, vectors)
    build_ann(config)
    with Store(config.output.layout.db, readonly=True) as store:
        ids, stored = next(store.iter_embeddings("synthetic", chunk_size=10_000))
    index = load_ann(config, model_id="synthetic")
    queries = stored[::15] / np.linalg.norm(stored[::15], axis=1, keepdims=True)
    _, found = index.search(queries, 10)
    truth = _exact_top(stored, ids, queries, 10)
    assert np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)]) >= 0.99


def _synthetic_store(tmp_path, vectors: np.ndarray, chunk: int = 1000):
    from imagerec.config import Config

    config = Config.model_validate({"data": {"image_root": tmp_path}, "output": {"dir": tmp_path / "out"},
                                    "ann": {"threads": 2, "build_chunk": chunk}})
    spec = HistogramSpec()
    hist = np.full(spec.size, 1.0 / spec.size, dtype=np.float32)
    with Store(config.output.layout.db) as store:
        store.set_meta("model_id", "synthetic")
        records = [ImageRecord(f"img{i:05d}.jpg".encode(), 1, 1, 8, 8, "JPEG", hist, spec.key, i, v, "synthetic")
                   for i, v in enumerate(vectors)]
        for start in range(0, len(records), 1000):
            store.write_batch(records[start : start + 1000])
    return config


@pytest.mark.parametrize("damage", ["truncate", "wrong_model", "wrong_dim", "wrong_metric", "flip_bytes", "bad_json", "no_meta"])
def test_damaged_index_is_refused(sample, tmp_path, damage):
    config = _copy_collection(sample, tmp_path)
    path, meta_path = config.output.layout.ann_file('ann_hnsw.bin'), ann_metadata_path(config)
    meta = json.loads(meta_path.read_text())
    if damage == "truncate":
        with open(path, "r+b") as fh:
            fh.truncate(meta["file_size"] // 2)
    elif damage in ("wrong_model", "wrong_dim", "wrong_metric"):
        key, value = {"wrong_model": ("model_id", "0123456789abcdef"), "wrong_dim": ("dim", 256),
                      "wrong_metric": ("metric", "l2")}[damage]
        meta[key] = value
        meta_path.write_text(json.dumps(meta))
    elif damage == "flip_bytes":
        with open(path, "r+b") as fh:
            fh.seek(meta["file_size"] // 2)
            chunk = fh.read(64)
            fh.seek(meta["file_size"] // 2)
            fh.write(bytes(b ^ 0xFF for b in chunk))
    elif damage == "bad_json":
        meta_path.write_text("{not json")
    else:
        meta_path.unlink()
    right_model = json.loads((sample.out / "ann_hnsw.json").read_text())["model_id"]
    with pytest.raises(AnnIndexError, match="build-ann"):
        load_ann(config, model_id=right_model, dim=512)


def test_corrupt_index_via_cli_is_one_line_error_not_a_crash(sample, tmp_path):
    """Even an index whose metadata checksum was 'fixed up' must not crash the process (subprocess)."""
    config = _copy_collection(sample, tmp_path)
    path, meta_path = config.output.layout.ann_file('ann_hnsw.bin'), ann_metadata_path(config)
    raw = bytearray(path.read_bytes())
    raw[100:4000] = os.urandom(3900)  # header and the start of the graph
    path.write_bytes(bytes(raw))
    cfg = tmp_path / "config.yaml"
    cfg.write_text(sample.config_path.read_text().replace(str(sample.out), str(config.output.dir)))
    result = run_cli(cfg, "query", "--id", "1")
    assert result.returncode == 1, result.stderr
    assert "build-ann" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    # now make the metadata agree with the damaged file: FAISS itself must refuse, still no signal
    meta = json.loads(meta_path.read_text())
    full, sample_hash = ann.file_hashes(path)
    st = path.stat()
    meta.update(file_sha256=full, file_sample_sha256=sample_hash, file_size=st.st_size)
    meta_path.write_text(json.dumps(meta))
    result = run_cli(cfg, "query", "--id", "1")
    assert result.returncode >= 0, f"crashed with signal {-result.returncode}"
    assert "Traceback" not in result.stderr


def test_no_index_yet(sample, tmp_path):
    config = _copy_collection(sample, tmp_path)
    config.output.layout.ann_file('ann_hnsw.bin').unlink()
    ann_metadata_path(config).unlink()
    with pytest.raises(AnnIndexError, match="no ANN index yet.*build-ann"):
        load_ann(config, model_id=None)


def test_wrong_dimension_query_is_an_error_not_a_segfault(sample):
    config = sample.config()
    index = load_ann(config, model_id=None)
    with pytest.raises(AnnIndexError, match="dimension"):
        index.search(np.ones((1, 256), np.float32), 5)
    with pytest.raises(AnnIndexError, match="NaN"):
        index.search(np.full((1, 512), np.nan, np.float32), 5)
    scores, ids = index.search(np.ones(512, np.float32) / np.sqrt(512), 10_000)  # k > count is clamped
    assert ids.shape == (1, 300) and (ids >= 0).all()


def test_failed_write_keeps_previous_index(sample, tmp_path, monkeypatch):
    """The new index's temp file is complete and fsynced, then the write fails (disk full): old index stays."""
    config = _copy_collection(sample, tmp_path)
    before = read_metadata(config)
    before_bytes = config.output.layout.ann_file('ann_hnsw.bin').read_bytes()
    real_fsync = ann._fsync_file
    written = []

    def fsync_then_fail(path):
        real_fsync(path)
        written.append(os.path.getsize(path))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ann, "_fsync_file", fsync_then_fail)
    with pytest.raises(AnnIndexError, match="No space left.*previous index is unchanged"):
        build_ann(config)
    monkeypatch.undo()
    assert written and written[0] > 0
    assert read_metadata(config) == before and config.output.layout.ann_file('ann_hnsw.bin').read_bytes() == before_bytes
    assert load_ann(config, model_id=before.model_id).count == before.count
    assert not [p for p in config.output.dir.iterdir() if p.name.endswith(".tmp")]


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
