"""The whitening build-ann fits on the collection: stored with the index, verified on load, used by query and evaluate.

Real sample photos (300, 10 folders), the tiny random model (512-d), real FAISS and SQLite; ``ann.whitening.dims``
16 so that 300 images are enough for a fit (8 per direction). Expected scores are computed here with numpy from
the stored embeddings, independently of ``imagerec.ann.whitening``.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from ann_support import SAMPLE_DIR, index_and_build, run_cli, write_collection_config
from imagerec.ann import AnnIndexError, load_ann, read_metadata, read_whitening
from imagerec.search.recommender import Recommender, run_query
from imagerec.store import Store
from imagerec.tools.status import collection_status

DIMS, POWER = 16, 0.25


@pytest.fixture(scope="module")
def whitened(tmp_path_factory, tiny_model_file):
    base = tmp_path_factory.mktemp("whitened")
    collection = write_collection_config(base, SAMPLE_DIR, tiny_model_file, ann={"whitening": {"dims": DIMS}})
    index_and_build(collection)
    return collection


def _stored(config) -> tuple[np.ndarray, np.ndarray]:
    with Store(config.output.layout.db, readonly=True) as store:
        ids, vectors = next(store.iter_embeddings(store.get_meta("model_id"), chunk_size=10_000))
    return ids, vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _reference_cosines(config, raw_share: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(ids, embedding scores): ``raw_share`` × cosine + the rest × cosine after a whitening fitted here with numpy."""
    ids, x = _stored(config)
    x = x.astype(np.float64)
    variances, directions = np.linalg.eigh(np.cov(x, rowvar=False, bias=True))
    top = np.argsort(variances)[::-1][:DIMS]
    z = (x - x.mean(axis=0)) @ directions[:, top] * variances[top] ** (-POWER / 2)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    return ids, raw_share * (x @ x.T) + (1 - raw_share) * (z @ z.T)


def _copy(collection, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(collection.out, out)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(collection.config_path.read_text().replace(str(collection.out), str(out)))
    return collection.config().with_overrides({"output.dir": out}), cfg


def test_build_ann_stores_the_collections_fit(whitened):
    config = whitened.config()
    meta = read_metadata(config)
    assert meta.whitening["dims"] == DIMS and meta.whitening["power"] == POWER and meta.whitening["rows"] == 300
    assert [f.name for f in meta.files][1] == meta.whitening["file"] and meta.whitening["file"].startswith("ann_whitening.")
    assert [f.name for f in meta.index_files] == [meta.files[0].name]  # the backend reads only its own file
    fit = read_whitening(config.output.layout, meta)
    ids, expected = _reference_cosines(config, raw_share=0.0)
    z = fit.apply(_stored(config)[1])
    assert fit.dim == meta.dim == 512 and np.allclose(z @ z.T, expected, atol=1e-4)
    assert collection_status(config).ann["whitening_dims"] == DIMS
    assert "current, 300 images, whitened re-ranking (16 dims)" in run_cli(whitened.config_path, "status").stdout


@pytest.mark.parametrize("raw_share", [0.5, 0.0, 1.0])
def test_query_ranks_by_the_blend_of_plain_and_whitened_cosine(whitened, raw_share):
    config = whitened.config(**{"ann.whitening.raw_share": raw_share})
    ids, expected = _reference_cosines(config, raw_share)
    row = {int(i): r for r, i in enumerate(ids)}
    query_id = int(ids[7])
    response = run_query(config, ids=[query_id], top_k=10, weights={"embedding": 1.0, "color": 0.0, "dhash": 0.0})
    got = [(r.id, r.scores["embedding"]) for r in response.results]
    assert [s for _, s in got] == pytest.approx([expected[row[query_id], row[i]] for i, _ in got], abs=1e-4)
    others = np.delete(expected[row[query_id]], row[query_id])
    assert got[0][1] == pytest.approx(others.max(), abs=1e-4)  # the best whitened neighbour is found
    _, raw = _stored(config)
    plain = raw[row[query_id]] @ raw[row[got[0][0]]]
    assert np.isclose(got[0][1], plain, atol=1e-4) == (raw_share == 1.0)


def test_evaluate_scores_in_the_same_space(whitened):
    proc = run_cli(whitened.config_path, "evaluate", "--json", "--k", "1")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["embedding_space"] == ("embedding score 0.5 × cosine + 0.5 × cosine after whitening (512 → 16 dims, "
                                         "power 0.25, fitted on 300 images)")
    ids, expected = _reference_cosines(whitened.config())
    with Store(whitened.config().output.layout.db, readonly=True) as store:
        paths = {r.id: r.path for r in store.get_images(ids.tolist())}
    labels = np.array([paths[int(i)].split(b"/")[0] for i in ids])
    np.fill_diagonal(expected, -np.inf)
    best = np.array([min(np.flatnonzero(row == row.max()), key=lambda j: ids[j]) for row in expected])  # ties: smaller id
    assert report["signals"]["embedding"]["p@1"] == pytest.approx(float(np.mean(labels[best] == labels)), abs=1e-9)
    assert 0.99 <= report["ann_recall@10"] <= 1.0  # the ANN still searches (and is scored on) the raw cosine


def test_damaged_fit_is_refused_until_rebuilt(whitened, tmp_path):
    config, cfg = _copy(whitened, tmp_path)
    path = config.output.layout.ann_file(read_metadata(config).whitening["file"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(AnnIndexError, match="build-ann"):
        load_ann(config, model_id=read_metadata(config).model_id)
    assert collection_status(config).ann["state"].startswith("damaged: ann_whitening.")
    proc = run_cli(cfg, "query", "--id", "1")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and "build-ann" in proc.stderr
    assert run_cli(cfg, "build-ann").returncode == 0
    assert run_cli(cfg, "query", "--id", "1").returncode == 0


def test_manifest_entry_must_name_one_of_its_files(whitened, tmp_path):
    config, _ = _copy(whitened, tmp_path)
    manifest = config.output.layout.ann_manifest
    raw = json.loads(manifest.read_text())
    raw["whitening"]["file"] = "ann_whitening.elsewhere.npz"
    manifest.write_text(json.dumps(raw))
    with pytest.raises(AnnIndexError, match="invalid whitening entry"):
        read_metadata(config)


def test_an_index_built_before_whitening_ranks_on_plain_cosine(whitened, tmp_path):
    config, _ = _copy(whitened, tmp_path)
    manifest = config.output.layout.ann_manifest
    raw = json.loads(manifest.read_text())
    name = raw.pop("whitening")["file"]
    raw["files"] = [f for f in raw["files"] if f["name"] != name]
    manifest.write_text(json.dumps(raw))
    with Recommender(config) as rec:
        assert rec.space.whitening is None and rec.space.describe() == "embedding cosine"
        ids, raw_vectors = _stored(config)
        response = rec.search(ids=[int(ids[3])], top_k=1)
        best = response.results[0]
        assert best.scores["embedding"] == pytest.approx(float(raw_vectors[3] @ raw_vectors[list(ids).index(best.id)]), abs=1e-5)


def test_small_collections_and_dims_0_keep_plain_cosine(whitened, tmp_path):
    config, cfg = _copy(whitened, tmp_path)
    for dims, why in ((0, ""), (64, " (whitening needs 512 images)")):
        text = cfg.read_text().replace(f"dims: {DIMS}", f"dims: {dims}")
        cfg.write_text(text)
        proc = run_cli(cfg, "build-ann")
        assert proc.returncode == 0 and f"re-ranking on plain cosine{why}," in proc.stdout, proc.stdout
        assert read_metadata(config).whitening is None and len(read_metadata(config).files) == 1
        cfg.write_text(text.replace(f"dims: {dims}", f"dims: {DIMS}"))
