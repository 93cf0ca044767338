"""The ``ivfpq`` backend and ``ann.kind: auto``: real FAISS, real SQLite store, real query re-ranking."""

from __future__ import annotations

import numpy as np
import pytest

from imagerec.ann import AnnIndexError, build_ann, load_ann, read_metadata
from imagerec.ann.base import AnnSettings, hnsw_bytes
from imagerec.ann.ivfpq import auto_m, auto_nlist, auto_nprobe
from imagerec.search.fusion import Weights
from imagerec.search.recommender import Recommender
from imagerec.store import Store
from test_ann import _clustered, _exact_top, _synthetic_store

N, DIM = 12_000, 64


@pytest.fixture(scope="module")
def vectors():
    return _clustered(n=N, dim=DIM, noise=0.8, seed=4)


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / truth.shape[1] for f, t in zip(found, truth)]))


def test_ivfpq_builds_from_a_chunked_training_sample_and_finds_neighbours(tmp_path, vectors):
    config = _synthetic_store(tmp_path, vectors, ann={"kind": "ivfpq"})
    summary = build_ann(config)
    meta = read_metadata(config)
    assert meta.kind == "ivfpq" and meta.count == N and summary.stage_s["train"] > 0
    assert meta.params["nlist"] == auto_nlist(N) and meta.params["m"] == auto_m(DIM) == 16
    index = load_ann(config, model_id="synthetic")
    assert index.default_params == {"nprobe": auto_nprobe(meta.params["nlist"])} and index.candidate_factor == 2.5
    with Store(config.output.layout.db, readonly=True) as store:
        ids, stored = next(store.iter_embeddings("synthetic", chunk_size=N))
    assert np.array_equal(index.labels(), ids)
    queries = stored[::120] / np.linalg.norm(stored[::120], axis=1, keepdims=True)
    truth = _exact_top(stored, ids, queries, 10)
    _, few = index.search(queries, 10, nprobe=1)
    _, found = index.search(queries, 100)  # candidates, as query asks for
    assert _recall(found, truth) >= 0.95 > _recall(few, truth)  # nprobe matters, per call
    with Recommender(config) as rec:  # exact re-ranking with the stored embeddings: no PQ error in the final top-10
        final = [[r.id for r in rec.search(ids=[int(i)], top_k=10, weights=Weights(1.0, 0.0, 0.0),
                                           include_query=True).results] for i in ids[::120]]
    assert _recall(np.asarray(final), truth) >= 0.98


def test_memory_mapped_index_answers_the_same(tmp_path, vectors):
    config = _synthetic_store(tmp_path, vectors, ann={"kind": "ivfpq", "ivfpq": {"nlist": 64}})  # mmap: the default
    build_ann(config)
    plain = load_ann(config.with_overrides({"ann.ivfpq.mmap": False}), model_id="synthetic")
    mapped = load_ann(config, model_id="synthetic")
    assert mapped.memory_mapped and not plain.memory_mapped
    q = vectors[:20] / np.linalg.norm(vectors[:20], axis=1, keepdims=True)
    assert np.array_equal(plain.search(q, 10)[1], mapped.search(q, 10)[1])


def test_auto_picks_hnsw_within_the_memory_budget_and_ivfpq_beyond(tmp_path, vectors):
    assert hnsw_bytes(N, DIM, {"M": 16}) < 1 << 20 * 4  # a few MB
    small = _synthetic_store(tmp_path / "a", vectors)  # default budget: 4096 MiB
    build_ann(small)
    assert read_metadata(small).kind == "hnsw"
    tight = _synthetic_store(tmp_path / "b", vectors, ann={"memory_budget": 1})  # 1 MiB: HNSW of 12,000 × 64-d does not fit
    build_ann(tight)
    assert read_metadata(tight).kind == "ivfpq"
    assert load_ann(tight, model_id="synthetic").count == N  # kind: auto loads whichever kind was built
    settings = AnnSettings.from_config(tight)
    assert settings.for_collection(10, DIM).kind == "hnsw" and settings.for_collection(N, DIM).kind == "ivfpq"


def test_explicit_kind_refuses_an_index_of_another_kind(tmp_path, vectors):
    config = _synthetic_store(tmp_path, vectors, ann={"kind": "ivfpq"})
    build_ann(config)
    with pytest.raises(AnnIndexError, match="kind 'ivfpq', ann.kind is 'hnsw'"):
        load_ann(config.with_overrides({"ann.kind": "hnsw"}), model_id="synthetic")


def test_too_few_vectors_or_a_bad_m_is_a_clear_error(tmp_path, vectors):
    few = _synthetic_store(tmp_path / "few", vectors[:5000], ann={"kind": "ivfpq"})
    with pytest.raises(AnnIndexError, match="too few to train"):
        build_ann(few)
    bad = _synthetic_store(tmp_path / "bad", vectors, ann={"kind": "ivfpq", "ivfpq": {"m": 7}})
    with pytest.raises(AnnIndexError, match="does not divide the embedding dimension 64"):
        build_ann(bad)


def test_parameter_rules():
    assert auto_nlist(550_000) == 4096 and auto_nlist(5_000_000) == 4096 and auto_nlist(1000) == 16 and auto_nlist(12_000) == 256
    assert auto_m(1280) == 64 and auto_m(512) == 64 and auto_m(100) == 25
    assert auto_nprobe(4096) == 256 and auto_nprobe(16) == 8 and auto_nprobe(4) == 4
