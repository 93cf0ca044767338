"""``duplicates`` on real photos with copies made on the fly: the default pretrained embedder, the real store and CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from ann_support import run_cli
from dupes_support import SOURCES, make_folder, write_config


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """The folder indexed with the default (pretrained) embedder and its ANN index built."""
    base = tmp_path_factory.mktemp("dupes")
    cfg = write_config(base, make_folder(base / "images"))
    for command in (["index", "-q"], ["build-ann"]):
        assert run_cli(cfg, *command, timeout=300).returncode == 0
    return cfg


def groups_of(cfg: Path, *options: str) -> dict:
    run = run_cli(cfg, "duplicates", "--json", *options)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def named(report: dict) -> list[set[str]]:
    return [{Path(m["relpath"]).stem for m in g["members"]} for g in report["groups"]]


def together(report: dict, x: str, y: str) -> bool:
    return any({x, y} <= g for g in named(report))


def test_exact_and_edited_copies_are_grouped_and_unrelated_photos_are_not(collection):
    report = groups_of(collection)
    assert together(report, "a", "a_copy")
    assert {"b", "b_half", "b_q30", "b_bright"} in named(report)
    assert not together(report, "c", "c_same_colours")  # same colour histogram, different picture
    originals = set(SOURCES)
    assert all(len(g & originals) <= 1 for g in named(report)), named(report)
    assert report["n_images_in_groups"] == sum(len(g["members"]) for g in report["groups"])


def test_a_chain_of_edits_never_joins_its_two_unrelated_ends(collection):
    report = groups_of(collection)
    chain_groups = [g for g in named(report) if any(name.startswith("d_to_e") for name in g)]
    assert chain_groups and max(len(g) for g in chain_groups) >= 3  # neighbouring steps are linked ...
    assert not together(report, "d_to_e_1", "e") and not together(report, "d", "e")  # ... the ends are not
    for group in report["groups"]:  # every pair of every group is alike (complete link), not just a chain of links
        n = len(group["members"])
        assert len(group["pairs"]) == n * (n - 1) // 2
        assert all(p["cosine"] >= report["params"]["group_similarity"] for p in group["pairs"])


def test_a_component_too_big_for_one_matrix_is_grouped_seed_by_seed(collection, monkeypatch):
    import imagerec
    import imagerec.dedup.assemble as assemble

    monkeypatch.setattr(assemble, "MAX_COMPONENT", 4)  # every component above 4 images takes the bounded-memory path
    with imagerec.open(collection) as col:
        report = col.duplicates().to_dict()
    assert {"b", "b_half", "b_q30", "b_bright"} in named(report) and together(report, "a", "a_copy")
    assert not together(report, "d_to_e_1", "e")
    for group in report["groups"]:
        assert len(group["members"]) <= 4
        assert all(p["cosine"] >= report["params"]["group_similarity"] for p in group["pairs"])


def test_keeper_is_the_largest_image_and_evidence_is_against_it(collection):
    report = groups_of(collection)
    group = next(g for g in report["groups"] if "b_half" in {Path(m["relpath"]).stem for m in g["members"]})
    keep = next(m for m in group["members"] if m["keep"])
    assert keep["id"] == group["keep"]
    assert keep["width"] * keep["height"] == max(m["width"] * m["height"] for m in group["members"])
    half = next(m for m in group["members"] if Path(m["relpath"]).stem == "b_half")
    assert half["hamming"] <= report["params"]["max_bits"] and half["cosine"] > 0.4
    assert all(os.path.isabs(m["path"]) and Path(m["path"]).exists() for m in group["members"])


def test_tier_exact_finds_only_identical_files(collection):
    report = groups_of(collection, "--tier", "exact")
    assert named(report) == [{"a", "a_copy"}]
    assert report["groups"][0]["tier"] == "exact"


def test_text_csv_and_contact_sheets(collection, tmp_path):
    run = run_cli(collection, "duplicates", "-q", "--csv", str(tmp_path / "d.csv"), "--output", str(tmp_path / "sheets"))
    assert run.returncode == 0, run.stderr
    assert "Nothing was moved or deleted" in run.stdout and "a_copy.jpg" in run.stdout
    rows = (tmp_path / "d.csv").read_text().splitlines()
    assert rows[0].startswith("group,tier,keep,id,path")
    sheets = sorted((tmp_path / "sheets").glob("group_*.png"))
    assert len(sheets) == len(groups_of(collection)["groups"]) and Image.open(sheets[0]).width > 100


def test_library_call_returns_what_the_cli_prints(collection):
    import imagerec

    with imagerec.open(collection) as col:
        report = col.duplicates().to_dict()
    cli = groups_of(collection)
    assert [sorted(m["id"] for m in g["members"]) for g in report["groups"]] == \
           [sorted(m["id"] for m in g["members"]) for g in cli["groups"]]


def test_without_embeddings_the_near_tier_works_from_hashes(tmp_path):
    root = make_folder(tmp_path / "images")
    cfg = write_config(tmp_path, root, arch="resnet18", init="random")  # no model file: hashes and colours only
    assert run_cli(cfg, "index", "-q").returncode == 0
    report = groups_of(cfg)
    assert report["params"]["embeddings"] is False
    assert together(report, "a", "a_copy") and together(report, "b", "b_q30")
    assert not together(report, "c", "c_same_colours")


def test_files_removed_since_the_last_index_are_left_out_and_said(tmp_path):
    root = make_folder(tmp_path / "images")
    cfg = write_config(tmp_path, root, arch="resnet18", init="random")
    assert run_cli(cfg, "index", "-q").returncode == 0
    (root / "copies" / "a_copy.jpg").unlink()
    report = groups_of(cfg)
    assert not any("a_copy" in g for g in named(report))
    assert any("changed or removed since the last index" in n for n in report["notices"])


def test_an_empty_collection_has_no_groups_and_no_database_is_a_one_line_error(tmp_path):
    (tmp_path / "images").mkdir()
    cfg = write_config(tmp_path, tmp_path / "images", arch="resnet18", init="random")
    missing = run_cli(cfg, "duplicates")
    assert missing.returncode != 0 and "Traceback" not in missing.stderr and "run 'index' first" in missing.stderr
    assert run_cli(cfg, "index", "-q").returncode == 0
    report = groups_of(cfg)
    assert report["groups"] == [] and report["n_groups"] == 0 and report["images"] == 0
