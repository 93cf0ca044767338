"""query: weighted fusion of our own measures over ANN candidates, on the real sample photos."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from ann_support import SAMPLE_DIR, index_and_build, run_cli, sample_collection, write_collection_config
from imagerec.search import similarity
from imagerec.cli import cli
from imagerec.config import Config, load_config
from imagerec.errors import ConfigError
from imagerec.errors import QueryError
from imagerec.search.fusion import Weights
from imagerec.search.recommender import Recommender, SearchSettings, run_query
from imagerec.store import Store


@pytest.fixture(scope="module")
def sample(tmp_path_factory, tiny_model_file):
    return sample_collection(tmp_path_factory, tiny_model_file)


@pytest.fixture(scope="module")
def ids(sample):
    with Store(sample.config().output.layout.db, readonly=True) as store:
        return store.embedding_ids(store.get_meta("model_id"))


def _expected_scores(store: Store, query_ids, result_id, model_id, weights: Weights):
    """Scores computed independently with similarity.py on the stored rows."""
    (r,) = store.get_images([result_id], model_id)
    parts = []
    for qid in query_ids:
        (q,) = store.get_images([qid], model_id)
        parts.append((float(similarity.cosine_similarity(q.embedding, r.embedding)),
                      float(similarity.bhattacharyya_coefficient(q.histogram, r.histogram)),
                      float(similarity.hash_similarity(q.dhash, r.dhash))))
    emb, col, ph = np.mean(parts, axis=0)
    return emb, col, ph, weights.embedding * emb + weights.color * col + weights.dhash * ph


def test_weights_are_validated_and_normalised():
    w = Weights.of(2, 1, 1)
    assert (w.embedding, w.color, w.dhash) == (0.5, 0.25, 0.25)
    assert Weights.of(0, 0, 3).dhash == 1.0
    for bad in ((0, 0, 0), (-1, 1, 1), (float("nan"), 1, 1)):
        with pytest.raises(QueryError):
            Weights.of(*bad)
    base = {"data": {"image_root": "."}, "output": {"dir": "."}}
    for query in ({"w_embedding": 0, "w_color": 0, "w_dhash": 0}, {"w_color": -0.5}):
        with pytest.raises(Exception):
            Config.model_validate({**base, "query": query})
    assert Config.model_validate(base).query.w_embedding is None  # null: the model's default


def test_default_weights_follow_the_model_and_fill_only_what_is_not_given():
    seed, pretrained = Weights.default("random"), Weights.default("imagenet")
    assert (seed.embedding, seed.color, seed.dhash) == pytest.approx((0.7, 0.2, 0.1))
    assert pretrained.embedding > seed.embedding and pretrained.color <= seed.color
    mixed = Weights.default("imagenet", (None, 1.0, None))  # colour given: the other two keep the defaults
    base = Weights.default("imagenet").as_dict()
    assert mixed.color == pytest.approx(1.0 / (1.0 + base["embedding"] + base["dhash"]))


def test_fused_score_equals_independent_weighted_sum(sample, ids):
    config = sample.config()
    weights = Weights.of(0.5, 0.3, 0.2)
    qid = int(ids[17])
    response = run_query(config, ids=[qid], top_k=15, weights=weights)
    assert len(response.results) == 15 and response.candidates >= 199  # 200 ANN candidates minus the query
    assert [r.rank for r in response.results] == list(range(1, 16))
    scores = [r.score for r in response.results]
    assert scores == sorted(scores, reverse=True)
    with Store(config.output.layout.db, readonly=True) as store:
        model_id = store.get_meta("model_id")
        for r in response.results:
            emb, col, ph, fused = _expected_scores(store, [qid], r.id, model_id, weights)
            assert r.scores["embedding"] == pytest.approx(emb, abs=1e-5)
            assert r.scores["color"] == pytest.approx(col, abs=1e-6)
            assert r.scores["dhash"] == pytest.approx(ph)
            assert r.score == pytest.approx(fused, abs=1e-5)
        # exact: no other image of the collection beats the last result (300 images, 200+ candidates re-ranked)
        every = [_expected_scores(store, [qid], int(i), model_id, weights)[3] for i in ids if i != qid]
        assert sorted(every, reverse=True)[:15] == pytest.approx(scores, abs=1e-5)


def test_weights_change_the_ranking(sample, ids):
    config = sample.config()
    by_color = run_query(config, ids=[int(ids[3])], top_k=10, weights=Weights.of(0, 1, 0))
    assert [r.score for r in by_color.results] == pytest.approx([r.scores["color"] for r in by_color.results])
    by_hash = run_query(config, ids=[int(ids[3])], top_k=10, weights=Weights.of(0, 0, 1))
    assert [r.score for r in by_hash.results] == pytest.approx([r.scores["dhash"] for r in by_hash.results])


def test_multi_image_query_averages(sample, ids):
    config = sample.config()
    a, b = int(ids[5]), int(ids[250])
    weights = SearchSettings.from_config(config).weights_for(None)  # the defaults run_query uses (seed model)
    response = run_query(config, ids=[a, b], top_k=10)
    with Store(config.output.layout.db, readonly=True) as store:
        model_id = store.get_meta("model_id")
        for r in response.results:
            assert r.id not in (a, b)
            emb, col, ph, fused = _expected_scores(store, [a, b], r.id, model_id, weights)
            assert r.score == pytest.approx(fused, abs=1e-5) and r.scores["color"] == pytest.approx(col, abs=1e-6)


def test_query_images_excluded_unless_include_query(sample, ids):
    config = sample.config()
    qid = int(ids[42])
    assert qid not in [r.id for r in run_query(config, ids=[qid], top_k=20).results]
    included = run_query(config, ids=[qid], top_k=20, include_query=True).results
    assert included[0].id == qid and included[0].near_duplicate and included[0].hamming == 0
    assert included[0].scores["embedding"] == pytest.approx(1.0, abs=1e-5)


def test_external_image_equals_id_query(sample, ids, tmp_path):
    """A collection photo copied outside the collection is decoded and embedded like 'index' did it."""
    config = sample.config()
    with Store(config.output.layout.db, readonly=True) as store:
        (row,) = store.get_images([int(ids[120])], store.get_meta("model_id"))
    outside = tmp_path / "copy.jpg"
    shutil.copy(sample.root / row.path.decode(), outside)
    with Recommender(config) as rec:
        external = rec.image_from_path(outside)
        stored = rec.image_by_id(row.id)
        inside = rec.image_from_path(sample.root / row.path.decode())
        assert external.source == "decoded" and external.image_id is None
        assert inside.source == "stored" and inside.image_id == row.id
        assert np.array_equal(external.histogram, stored.histogram) and external.dhash == stored.dhash
        assert np.allclose(external.embedding, stored.embedding, atol=1e-5)
        by_file = rec.query([external], top_k=10)
        by_id = rec.query([stored], top_k=10, include_query=True)
    assert [r.id for r in by_file.results] == [r.id for r in by_id.results]
    assert [r.score for r in by_file.results] == pytest.approx([r.score for r in by_id.results], abs=1e-5)
    assert by_file.results[0].id == row.id and by_file.results[0].near_duplicate


def test_near_duplicate_flag_on_reencoded_copy(tmp_path, tiny_model_file):
    root = tmp_path / "images"
    sources = sorted((sample_dir := __import__("ann_support").SAMPLE_DIR).rglob("*.jpg"))[:: 30]
    for src in sources:
        dest = root / src.relative_to(sample_dir)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dest)
    original = root / sources[0].relative_to(sample_dir)
    with Image.open(original) as img:
        img.convert("RGB").save(root / "copy_q60.jpg", quality=60)
    collection = write_collection_config(tmp_path, root, tiny_model_file)
    index_and_build(collection)
    config = collection.config()
    with Store(config.output.layout.db, readonly=True) as store:
        copy_id = store.find_by_path(b"copy_q60.jpg")
        original_id = store.find_by_path(str(original.relative_to(root)).encode())
    results = run_query(config, ids=[original_id], top_k=5).results
    assert results[0].id == copy_id and results[0].near_duplicate
    assert results[0].hamming <= config.query.near_duplicate_max_bits
    assert not any(r.near_duplicate for r in results[1:])
    # the collection file changes after 'index': decoded afresh, but still excluded as the query itself
    with Image.open(original) as img:
        img.convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(original, quality=90)
    with Recommender(config) as rec:
        changed = rec.image_from_path(original)
        assert changed.source == "decoded" and changed.rel_path is not None
        assert original_id not in [r.id for r in rec.query([changed], top_k=20).results]


# -- CLI ------------------------------------------------------------------------------------------


def _invoke(sample, *args):
    return CliRunner().invoke(cli, ["--config", str(sample.config_path), *args], obj={})


def test_cli_json_schema(sample, ids):
    result = _invoke(sample, "query", "--id", str(int(ids[0])), "--top-k", "7", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 7 and [r["rank"] for r in rows] == list(range(1, 8))
    for row in rows:
        assert {"rank", "id", "path", "score", "scores", "near_duplicate"} <= set(row)
        assert set(row["scores"]) == {"embedding", "color", "dhash"}
        assert isinstance(row["id"], int) and isinstance(row["near_duplicate"], bool)
        assert (sample.root / row["path"]).is_file()


def test_cli_json_path_is_absolute_and_goes_straight_back_into_query(sample, ids):
    first = json.loads(_invoke(sample, "query", "--id", str(int(ids[0])), "--top-k", "3", "--json").stdout)
    for row in first:
        assert Path(row["path"]).is_absolute() and Path(row["path"]) == sample.root / row["relpath"]
        assert not Path(row["relpath"]).is_absolute()
    again = json.loads(_invoke(sample, "query", "--image", first[0]["path"], "--top-k", "3", "--json").stdout)
    by_id = json.loads(_invoke(sample, "query", "--id", str(first[0]["id"]), "--top-k", "3", "--json").stdout)
    assert [r["id"] for r in again] == [r["id"] for r in by_id]  # the stored image itself, not a re-decoded copy


def test_old_weight_names_are_refused_with_the_new_name(sample, tmp_path):
    result = _invoke(sample, "query", "--id", "1", "--w-phash", "0.5")
    assert result.exit_code == 2 and "--w-dhash" in result.output
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump({"data": {"image_root": "."}, "output": {"dir": "."}, "query": {"w_phash": 0.1},
                                    "ann": {"M": 32}}))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "renamed to 'query.w_dhash'" in str(info.value) and "renamed to 'ann.hnsw.M'" in str(info.value)


def test_cli_table_and_weights(sample, ids):
    result = _invoke(sample, "query", "--id", str(int(ids[0])), "--top-k", "3", "--w-embedding", "1", "--w-color", "1", "--w-dhash", "0")
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert "embedding 0.50, color 0.50, dhash 0.00" in lines[0]
    assert lines[1].split()[:6] == ["rank", "id", "score", "embed", "color", "dhash"]
    assert len(lines) == 5 and lines[2].split()[0] == "1"


def test_cli_output_writes_contact_sheet(sample, ids, tmp_path):
    from imagerec.tools.render import sheet_size

    out = tmp_path / "results.png"
    photo = sorted(sample.root.rglob("*.jpg"))[3]
    result = _invoke(sample, "query", "--image", str(photo), "--id", str(int(ids[200])), "--top-k", "6", "--output", str(out))
    assert result.exit_code == 0, result.output
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size == sheet_size(2, 6)


@pytest.mark.parametrize("case", ["missing_file", "undecodable", "bad_weights", "all_zero", "unknown_id", "no_index", "no_db"])
def test_cli_errors_are_one_line(sample, tmp_path, case):
    cfg = sample.config_path
    args = ["query", "--id", "1"]
    if case == "missing_file":
        args = ["query", "--image", str(tmp_path / "nope.jpg")]
    elif case == "undecodable":
        bad = tmp_path / "text.jpg"
        bad.write_text("this is not a JPEG")
        args = ["query", "--image", str(bad)]
    elif case == "bad_weights":
        args = ["query", "--id", "1", "--w-color", "-1"]
    elif case == "all_zero":
        args = ["query", "--id", "1", "--w-embedding", "0", "--w-color", "0", "--w-dhash", "0"]
    elif case == "unknown_id":
        args = ["query", "--id", "999999"]
    elif case in ("no_index", "no_db"):
        out = tmp_path / "out"
        shutil.copytree(sample.out, out)
        if case == "no_index":
            for f in out.glob("ann*"):
                f.unlink()
        else:
            for p in out.glob("images.db*"):
                p.unlink()
        cfg = tmp_path / "config.yaml"
        cfg.write_text(sample.config_path.read_text().replace(str(sample.out), str(out)))
    result = CliRunner().invoke(cli, ["--config", str(cfg), *args], obj={})
    assert result.exit_code != 0
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: ")
    expected = {"missing_file": "not found", "undecodable": "cannot use this query image", "bad_weights": ">= 0",
                "all_zero": "not all be 0", "unknown_id": "no image with id", "no_index": "build-ann",
                "no_db": "run 'index' first"}[case]
    assert expected in result.stderr


def test_cli_subprocess_end_to_end(sample, ids):
    result = run_cli(sample.config_path, "query", "--id", str(int(ids[9])), "--top-k", "3", "--json")
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)) == 3
    bad = run_cli(sample.config_path, "query", "--image", "/nonexistent/x.jpg")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_config_rejects_bad_query_section(tmp_path):
    import yaml

    from imagerec.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"data": {"image_root": "."}, "output": {"dir": "."},
                                    "query": {"w_embedding": 0, "w_color": 0, "w_dhash": 0}}))
    with pytest.raises(ConfigError, match="must not all be 0"):
        load_config(path)


def test_hash_candidates_are_exactly_the_images_within_the_bit_limit(sample, ids):
    config = sample.config()
    with Recommender(config) as rec:
        query = rec.image_by_id(int(ids[5]))
        found = rec.hash_candidates([query], limit=10_000)
        with Store(config.output.layout.db, readonly=True) as store:  # independent: every stored hash, one by one
            model_id = store.get_meta("model_id")
            expected = {r.id for r in store.get_images([int(i) for i in ids], model_id)
                        if bin((r.dhash ^ query.dhash) & (2**64 - 1)).count("1") <= config.query.hash_candidates_max_bits}
        assert found == expected and int(ids[5]) in found
        assert len(rec.hash_candidates([query], limit=1)) == 1


def test_a_re_encoded_copy_is_found_with_a_single_ann_candidate(tmp_path, tiny_model_file):
    root = tmp_path / "photos"
    shutil.copytree(SAMPLE_DIR / "watch", root / "watch")
    original = root / "watch" / sorted(p.name for p in (root / "watch").iterdir())[0]
    Image.open(original).convert("RGB").resize((150, 100)).save(root / "copy.jpg", quality=40)
    only_itself = {"candidates": 1, "candidates_per_k": 1}  # the ANN's one candidate is usually the query itself
    collection = write_collection_config(tmp_path, root, tiny_model_file, query=only_itself)
    index_and_build(collection)
    config = collection.config()
    with Store(config.output.layout.db, readonly=True) as store:
        original_id = store.find_by_path(b"watch/" + original.name.encode())
        copy_id = store.find_by_path(b"copy.jpg")
    (result,) = run_query(config, ids=[original_id], top_k=1).results
    assert result.id == copy_id and result.near_duplicate
    no_hash = config.model_copy(update={"query": config.query.model_copy(update={"hash_candidates_max_bits": None})})
    with Recommender(no_hash) as rec:
        assert rec.hash_candidates([rec.image_by_id(original_id)], limit=10) == set()


def test_a_cropped_copy_finds_its_photo_first_even_when_the_fused_score_prefers_another(tmp_path, tiny_model_file):
    """Colour weight only, and a decoy holding exactly the crop's pixels upside down: the decoy has the best
    fused score; the same-photo tier puts the cropped photo's original first, marked near-duplicate."""
    root = tmp_path / "photos"
    (root / "ketch").mkdir(parents=True)
    for source in sorted((SAMPLE_DIR / "ketch").glob("*.jpg"))[:8]:
        shutil.copy(source, root / "ketch" / source.name)
    original = sorted((root / "ketch").iterdir())[0]
    with Image.open(original) as img:
        w, h = img.size
        crop = img.convert("RGB").crop((w // 10, h // 10, w - w // 10, h - h // 10))
    crop.save(tmp_path / "crop.png")
    crop.transpose(Image.Transpose.FLIP_TOP_BOTTOM).save(root / "decoy.png")  # the crop's very colours
    colour_only = ["--w-embedding", "0", "--w-color", "1", "--w-dhash", "0", "--top-k", "3", "--json"]
    answers = {}
    for top in (5, 0):
        collection = write_collection_config(tmp_path / f"top{top}", root, tiny_model_file, query={"same_photo_top": top})
        index_and_build(collection)
        result = run_cli(collection.config_path, "query", "--image", str(tmp_path / "crop.png"), *colour_only)
        assert result.returncode == 0, result.stderr
        answers[top] = json.loads(result.stdout)
    checked, plain = answers[5], answers[0]
    assert plain[0]["relpath"] == "decoy.png" and plain[0]["match"] is None and not plain[0]["near_duplicate"]
    assert checked[0]["relpath"] == f"ketch/{original.name}" and checked[0]["near_duplicate"]
    assert checked[0]["match"] >= 0.96 and checked[1]["relpath"] == "decoy.png" and checked[1]["match"] < 0.5
    assert [r["relpath"] for r in plain[:2]] == ["decoy.png", f"ketch/{original.name}"]
