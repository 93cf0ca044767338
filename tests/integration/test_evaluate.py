"""evaluate: retrieval metrics on a hand-worked case, leave-one-out on real photos checked against an
independent numpy computation, weight tuning, config writing, near-duplicates and CLI errors."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from ann_support import SAMPLE_DIR, index_and_build, run_cli, write_collection_config
from imagerec.config import load_config
from imagerec.eval.retrieval import evaluate
from imagerec.eval.tuning import TuneSettings, simplex_grid
from imagerec.eval.near_duplicates import EDITS, near_duplicate_benchmark
from imagerec.search.fusion import Weights
from imagerec.eval.metrics import rank_by_score, ranked_metrics
from imagerec.store import Store

CLASSES = ("Leopards", "car_side", "sunflower")
PER_CLASS = 20


# -- metrics on a hand-worked case ------------------------------------------------------------------


def test_ranked_metrics_known_answer():
    # 6 items, classes A = ids 10, 11, 12 and B = ids 13, 14, 15. Scores of two queries against all 6
    # (the query's own column is -inf, so it ranks last and is cut off):
    #   query 10 (A): 11: .9, 13: .8, 12: .8, 14: .1, 15: .0  -> 13 and 12 tie at .8: the smaller id (12) first
    #       ranking 11 12 13 14 15 -> hits 1 1 0 0 0, relevant 2
    #       P@1 = 1, P@5 = 2/5, R@1 = 1/2, R@5 = 1, AP = (1/1 + 2/2) / 2 = 1
    #   query 13 (B): 10: .9, 11: .7, 14: .6, 12: .5, 15: .2
    #       ranking 10 11 14 12 15 -> hits 0 0 1 0 1, relevant 2
    #       P@1 = 0, P@5 = 2/5, R@1 = 0, R@5 = 1, AP = (1/3 + 2/5) / 2 = 11/30
    #   mean AP = (1 + 11/30) / 2 = 41/60
    ids = np.array([10, 11, 12, 13, 14, 15])
    labels = np.array(list("AAABBB"))
    scores = np.array([
        [-np.inf, 0.9, 0.8, 0.8, 0.1, 0.0],
        [0.9, 0.7, 0.5, -np.inf, 0.6, 0.2],
    ])
    order = rank_by_score(scores, ids)[:, :5]
    assert ids[order].tolist() == [[11, 12, 13, 14, 15], [10, 11, 14, 12, 15]]
    hits = labels[order] == np.array(["A", "B"])[:, None]
    m = ranked_metrics(hits, np.array([2, 2]), ks=(1, 5))
    assert m["p@1"].tolist() == [1.0, 0.0]
    assert m["p@5"] == pytest.approx([0.4, 0.4])
    assert m["r@1"] == pytest.approx([0.5, 0.0])
    assert m["r@5"] == pytest.approx([1.0, 1.0])
    assert m["map"] == pytest.approx([1.0, 11 / 30])
    assert m["map"].mean() == pytest.approx(41 / 60)


def test_ranked_metrics_rejects_queries_without_relevant_items():
    with pytest.raises(ValueError):
        ranked_metrics(np.zeros((1, 3), bool), np.array([0]))


def test_simplex_grid():
    grid = simplex_grid(0.25)
    assert len(grid) == 15  # (n + 1)(n + 2) / 2 points for n = 4
    assert np.allclose(grid.sum(axis=1), 1.0)
    assert np.allclose(grid * 4, np.round(grid * 4))
    assert len(simplex_grid(0.05)) == 231
    assert [0.7, 0.2, 0.1] in np.round(simplex_grid(0.05), 10).tolist()


# -- a small real collection ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def collection(tmp_path_factory, tiny_model_file):
    """60 real photos, 3 class folders, indexed with the tiny random model, ANN built."""
    base = tmp_path_factory.mktemp("evaluate")
    root = base / "photos"
    for name in CLASSES:
        (root / name).mkdir(parents=True)
        for src in sorted((SAMPLE_DIR / name).iterdir())[:PER_CLASS]:
            shutil.copy(src, root / name / src.name)
    coll = write_collection_config(base, root, tiny_model_file)
    index_and_build(coll)
    return coll


def _independent(config, weights: Weights, query_ids=None):
    """P@k, R@k and mAP of each signal, leave-one-out, computed here from the raw stored rows."""
    with Store(config.output.layout.db, readonly=True) as store:
        model_id = store.get_meta("model_id")
        rows = store.get_images(store.embedding_ids(model_id).tolist(), model_id)
    ids = np.array([r.id for r in rows])
    label = np.array([r.path.split(b"/")[0].decode() for r in rows])
    emb = np.stack([r.embedding for r in rows]).astype(np.float64)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    roots = np.sqrt(np.stack([r.histogram for r in rows]).astype(np.float64))
    hashes = [r.dhash & 0xFFFFFFFFFFFFFFFF for r in rows]
    signals = {
        "embedding": emb @ emb.T,
        "color": roots @ roots.T,  # Bhattacharyya: sum sqrt(p q) = sqrt(p) . sqrt(q)
        "dhash": np.array([[1 - (a ^ b).bit_count() / 64 for b in hashes] for a in hashes]),
    }
    signals["fused"] = weights.embedding * signals["embedding"] + weights.color * signals["color"] + weights.dhash * signals["dhash"]
    out = {}
    for name, matrix in signals.items():
        per = {k: [] for k in ("p@1", "p@5", "p@10", "r@1", "r@5", "r@10", "map")}
        for q in range(len(ids)):
            if query_ids is not None and ids[q] not in query_ids:
                continue
            ranked = sorted((j for j in range(len(ids)) if j != q), key=lambda j: (-matrix[q, j], ids[j]))
            hits = [label[j] == label[q] for j in ranked]
            total = sum(hits)
            for k in (1, 5, 10):
                per[f"p@{k}"].append(sum(hits[:k]) / k)
                per[f"r@{k}"].append(sum(hits[:k]) / total)
            found, ap = 0, 0.0
            for rank, hit in enumerate(hits, 1):
                if hit:
                    found += 1
                    ap += found / rank
            per["map"].append(ap / total)
        out[name] = {k: float(np.mean(v)) for k, v in per.items()}
    return out


def test_cli_json_matches_independent_computation(collection):
    proc = run_cli(collection.config_path, "evaluate", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["n_queries"] == report["n_items"] == 3 * PER_CLASS and report["n_groups"] == 3
    assert report["weights"] == pytest.approx({"embedding": 0.7, "color": 0.2, "dhash": 0.1})
    assert set(report["signals"]) == {"embedding", "color", "dhash", "fused"}
    assert 0.99 <= report["ann_recall@10"] <= 1.0  # HNSW over 60 vectors with ef_search 256 is exact
    expected = _independent(collection.config(), Weights.of(0.7, 0.2, 0.1))
    for signal, metrics in expected.items():
        assert set(report["signals"][signal]) == set(metrics)
        for key, value in metrics.items():
            assert report["signals"][signal][key] == pytest.approx(value, abs=1e-9), (signal, key)


def test_sample_labels_file_and_markdown(collection, tmp_path):
    # merge two folders into one group; a path-only row takes its folder; one row names no image
    leopards = sorted(p.name for p in (collection.root / "Leopards").iterdir())
    cars = sorted(p.name for p in (collection.root / "car_side").iterdir())
    labels = tmp_path / "labels.csv"
    labels.write_text("path,group\n" + "".join(f"Leopards/{n},animal_or_car\n" for n in leopards)
                      + "".join(f"car_side/{n},animal_or_car\n" for n in cars[:10])
                      + "".join(f"car_side/{n}\n" for n in cars[10:]) + "nowhere/x.jpg,lost\n")
    report = evaluate(collection.config(), labels_file=labels, sample=7, seed=3)
    assert report.n_items == 40 and report.n_groups == 2 and report.n_queries == 7
    assert any("1 rows" in note for note in report.notes) and any("20 images have no label" in n for n in report.notes)
    again = evaluate(collection.config(), labels_file=labels, sample=7, seed=3)
    assert again.signals == report.signals  # seeded
    out = tmp_path / "report.md"
    proc = run_cli(collection.config_path, "evaluate", "--sample", "10", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert "| fused |" in text and "| signal | p@1 | p@5 | p@10 |" in text


def test_tune_weights_on_simplex_and_not_worse_than_defaults(collection):
    report = evaluate(collection.config(), tune=TuneSettings(step=0.05, metric="map"))
    t = report.tuning
    best = np.array([t.best.embedding, t.best.color, t.best.dhash])
    assert best.sum() == pytest.approx(1.0) and np.allclose(best * 20, np.round(best * 20), atol=1e-9)
    assert t.grid_points == 231 and t.val_queries + t.test_queries == 60 and t.val_queries == 30
    assert t.validation["best"]["map"] >= t.validation["configured"]["map"] - 1e-12
    assert t.validation["configured"]["map"] != t.test["configured"]["map"]  # two different parts
    # the best weights' figures over all queries equal an independent computation with those weights
    full = evaluate(collection.config(), weights=t.best)
    assert full.signals["fused"]["map"] == pytest.approx(_independent(collection.config(), t.best)["fused"]["map"], abs=1e-9)


def test_write_config_keeps_other_keys(collection, tmp_path):
    target = tmp_path / "sub" / "tuned.yaml"
    proc = run_cli(collection.config_path, "evaluate", "--tune-weights", "--grid-step", "0.25", "--metric", "p@10",
                   "--json", "--write-config", str(target))
    assert proc.returncode == 0, proc.stderr
    best = json.loads(proc.stdout)["tuning"]["best_weights"]
    written = load_config(target)
    original = collection.config()
    assert (written.query.w_embedding, written.query.w_color, written.query.w_dhash) == pytest.approx(
        (best["embedding"], best["color"], best["dhash"]))
    assert written.data.image_root == original.data.image_root and written.output.dir == original.output.dir
    assert written.index.workers == original.index.workers == 2 and written.ann.threads == 2
    assert sum(best.values()) == pytest.approx(1.0) and all(round(v * 4, 9).is_integer() for v in best.values())


def test_near_duplicates_leave_collection_untouched(collection):
    config = collection.config()
    files_before = sorted(p for p in collection.root.rglob("*"))
    with Store(config.output.layout.db, readonly=True) as store:
        count_before, version_before = store.count_images(), store.data_version
    scratch = set(Path(tempfile.gettempdir()).glob("imagerec-near-duplicates-*"))
    report = near_duplicate_benchmark(config, images=3, seed=1)
    assert report.images == 3 and report.copies == 3 * len(EDITS) and not report.skipped
    assert report.accuracy["jpeg20-30"]["dhash"]["top1"] == 1.0
    assert report.accuracy["hflip"]["dhash"]["top1"] < 1.0  # dHash is not mirror-invariant: the ranks are real
    for edit in report.accuracy.values():
        for signal in edit.values():
            assert 0.0 <= signal["top1"] <= signal["top5"] <= 1.0
    assert sorted(p for p in collection.root.rglob("*")) == files_before
    with Store(config.output.layout.db, readonly=True) as store:
        assert (store.count_images(), store.data_version) == (count_before, version_before)
    assert set(Path(tempfile.gettempdir()).glob("imagerec-near-duplicates-*")) == scratch  # copies removed


# -- CLI errors -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flat_collection(tmp_path_factory, tiny_model_file):
    """Six photos directly under the root: no class folders."""
    base = tmp_path_factory.mktemp("flat")
    root = base / "photos"
    root.mkdir()
    for i, src in enumerate(sorted((SAMPLE_DIR / "Leopards").iterdir())[:6]):
        shutil.copy(src, root / f"{i}.jpg")
    coll = write_collection_config(base, root, tiny_model_file)
    index_and_build(coll)
    return coll


@pytest.mark.parametrize("args, message", [
    ((), "no labels"),
    (("--labels", "missing.csv"), "labels file not found"),
    (("--tune-weights",), "no labels"),
])
def test_cli_errors_without_labels(flat_collection, args, message):
    proc = run_cli(flat_collection.config_path, "evaluate", *args)
    assert proc.returncode != 0
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_cli_near_duplicates_needs_no_labels(flat_collection):
    proc = run_cli(flat_collection.config_path, "evaluate", "--near-duplicates", "--edits", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)["near_duplicates"]
    assert result["images"] == 2 and result["copies"] == 2 * len(EDITS)
    assert set(result["edits"]) == {e.name for e in EDITS}
    assert set(result["edits"]["crop10"]) == {"embedding", "color", "dhash", "fused", "query"}


@pytest.mark.parametrize("args, message", [
    (("--tune-weights", "--grid-step", "0.3"), "--grid-step must divide 1"),
    (("--write-config", "x.yaml"), "--write-config needs --tune-weights"),
    (("--tune-weights", "--sample", "1"), "at least 2 queries"),
])
def test_cli_errors_bad_options(collection, args, message):
    proc = run_cli(collection.config_path, "evaluate", *args)
    assert proc.returncode != 0
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_cli_error_without_ann_index(collection, tmp_path):
    config = collection.config()
    base = tmp_path / "noann"
    coll = write_collection_config(base, collection.root, config.output.layout.model)
    shutil.copy(config.output.layout.db, coll.out / "images.db")
    proc = run_cli(coll.config_path, "evaluate")
    assert proc.returncode != 0 and "build-ann" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not os.path.exists(coll.out / "ann.json")
