"""Contact sheet, profile and viz-2d on the real sample (through the CLI where a user would use it)."""

from __future__ import annotations

import pstats
import time

import pytest
from click.testing import CliRunner
from PIL import Image

from ann_support import sample_collection
from imagerec.cli import cli
from imagerec.search.recommender import Recommender
from imagerec.tools.render import render_contact_sheet, sheet_size


@pytest.fixture(scope="module")
def sample(tmp_path_factory, tiny_model_file):
    return sample_collection(tmp_path_factory, tiny_model_file)


def _invoke(sample, *args):
    return CliRunner().invoke(cli, ["--config", str(sample.config_path), *args], obj={})


def test_contact_sheet_layout_and_near_duplicate_frame(sample, tmp_path):
    config = sample.config()
    with Recommender(config) as rec:
        response = rec.query([rec.image_by_id(7)], top_k=12, include_query=True)
    assert response.results[0].near_duplicate  # the query itself, distance 0
    out = render_contact_sheet(response, config, tmp_path / "sheet.png")
    with Image.open(out) as img:
        assert img.size == sheet_size(1, 12)
        # the first result cell (row 2) has the red near-duplicate frame
        from imagerec.tools.render import CAPTION, PAD, THUMB, TITLE

        x, y = PAD, TITLE + PAD + (THUMB + CAPTION + PAD)
        assert img.convert("RGB").getpixel((x - 2, y + THUMB // 2)) == (220, 30, 30)
    assert sheet_size(3, 0) == (PAD + 5 * (THUMB + PAD), TITLE + PAD + (THUMB + CAPTION + PAD))


def test_contact_sheet_survives_a_vanished_result_file(sample, tmp_path):
    config = sample.config().with_overrides({"data.image_root": tmp_path})  # no files there
    with Recommender(config) as rec:
        response = rec.query([rec.image_by_id(3)], top_k=3)
    out = render_contact_sheet(response, config, tmp_path / "s.png")
    assert Image.open(out).size == sheet_size(1, 3)


def test_profile_query_writes_readable_prof(sample):
    photo = sorted(sample.root.rglob("*.jpg"))[11]
    result = _invoke(sample, "profile", "--mode", "query", "--image", str(photo), "--repeat", "3", "--top", "10")
    assert result.exit_code == 0, result.output
    prof = sample.out / "cache" / "profile_query.prof"
    stats = pstats.Stats(str(prof))
    assert stats.total_calls > 0
    for stage in ("ann_search", "fetch", "rerank"):
        assert stage in result.stdout
    assert "cumulative" in result.stdout or "cumtime" in result.stdout


def test_profile_index_writes_readable_prof_and_leaves_collection_alone(sample):
    from imagerec.store import Store

    with Store(sample.out / "images.db", readonly=True) as store:
        before = store.data_version
    result = _invoke(sample, "profile", "--mode", "index", "--limit", "40", "--top", "10")
    assert result.exit_code == 0, result.output
    stats = pstats.Stats(str(sample.out / "cache" / "profile_index.prof"))
    assert stats.total_calls > 0
    for stage in ("decode", "features", "embed", "store"):
        assert stage in result.stdout
    with Store(sample.out / "images.db", readonly=True) as store:
        assert store.data_version == before
    assert not (sample.out / "cache" / "profile_index_scratch").exists()


def test_viz_2d_writes_png_quickly(sample, tmp_path):
    out = tmp_path / "viz.png"
    t0 = time.perf_counter()
    result = _invoke(sample, "viz-2d", "--sample-size", "100", "--output", str(out), "--seed", "3")
    assert result.exit_code == 0, result.output
    assert time.perf_counter() - t0 < 60
    assert "100 points, 10 folders" in result.stdout
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size == (1200, 1000)


def test_viz_sample_is_seeded_and_uniform():
    import numpy as np

    from imagerec.store.records import sample_ids, top_folder

    ids = np.arange(1, 1001)
    a, b = sample_ids(ids, 50, seed=1), sample_ids(ids, 50, seed=1)
    assert np.array_equal(a, b) and len(set(a.tolist())) == 50
    assert not np.array_equal(a, sample_ids(ids, 50, seed=2))
    assert np.array_equal(sample_ids(ids, 5000, seed=0), ids)
    assert top_folder(b"Leopards/image_0001.jpg") == "Leopards" and top_folder(b"x.jpg") == "(top level)"


def test_viz_2d_thumbnails(sample, tmp_path):
    out = tmp_path / "thumbs.png"
    result = _invoke(sample, "viz-2d", "--sample-size", "40", "--output", str(out), "--thumbnails")
    assert result.exit_code == 0, result.output
    assert Image.open(out).format == "PNG"


def test_viz_2d_empty_collection_is_one_line_error(tmp_path):
    import yaml

    from imagerec.store import Store

    (tmp_path / "out").mkdir()
    Store(tmp_path / "out" / "images.db").close()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"image_root": str(tmp_path)}, "output": {"dir": str(tmp_path / "out")}}))
    result = CliRunner().invoke(cli, ["--config", str(cfg), "viz-2d", "--output", str(tmp_path / "v.png")], obj={})
    assert result.exit_code == 1 and result.stderr.count("\n") == 1 and "at least 3 images" in result.stderr
