"""An empty, unmounted or wrong image root must not wipe the collection; --prune confirms a real removal."""

from __future__ import annotations

import shutil

import pytest
import yaml

from ann_support import run_cli
from imagerec.config import load_config
from imagerec.errors import ConfigError
from imagerec.indexing.run import index_collection
from imagerec.store import Store


def _collection(tmp_path, make_image, n=10):
    root = tmp_path / "photos"
    for i in range(n):
        make_image(root / f"{i:02d}.png", seed=i)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"data": {"image_root": str(root)}, "output": {"dir": str(tmp_path / "out")},
                                      "index": {"workers": 1}, "model": {"arch": "resnet18", "init": "random"}}))
    return root, config


def _count(config_path) -> int:
    with Store(load_config(config_path).output.layout.db, readonly=True) as store:
        return store.count_images()


def test_an_empty_root_keeps_every_row_and_says_so(tmp_path, make_image):
    root, config_path = _collection(tmp_path, make_image)
    index_collection(load_config(config_path))
    empty = tmp_path / "unmounted"
    empty.mkdir()
    done = run_cli(config_path, "index", "-q", "--image-root", str(empty))
    assert done.returncode == 0, done.stderr
    assert "0 removed" in done.stdout and "kept 10 images" in done.stdout and "--prune" in done.stdout
    assert _count(config_path) == 10


def test_another_root_does_not_silently_replace_the_collection(tmp_path, make_image):
    _, config_path = _collection(tmp_path, make_image)
    index_collection(load_config(config_path))
    other = tmp_path / "other"
    for i in range(200):  # many new files: the old ones are a small share of all rows afterwards
        make_image(other / f"n{i}.png", size=(8, 8), seed=100 + i)
    summary = index_collection(load_config(config_path).with_overrides({"data.image_root": other}))
    assert summary.removed == 0 and summary.removal_held == 10
    assert _count(config_path) == 210


def test_a_small_deletion_is_removed_and_a_large_one_needs_prune(tmp_path, make_image):
    root, config_path = _collection(tmp_path, make_image)
    index_collection(load_config(config_path))
    (root / "00.png").unlink()  # 10 % of the collection
    assert index_collection(load_config(config_path)).removed == 1
    for i in range(1, 6):  # 5 of the 9 left
        (root / f"{i:02d}.png").unlink()
    held = index_collection(load_config(config_path))
    assert (held.removed, held.removal_held) == (0, 5) and _count(config_path) == 9
    pruned = run_cli(config_path, "index", "-q", "--prune")
    assert pruned.returncode == 0 and "5 removed" in pruned.stdout
    assert _count(config_path) == 4


def test_a_missing_root_is_an_error_that_changes_nothing(tmp_path, make_image):
    root, config_path = _collection(tmp_path, make_image)
    index_collection(load_config(config_path))
    shutil.rmtree(root)
    done = run_cli(config_path, "index", "-q")
    assert done.returncode != 0 and "is not a folder" in done.stderr and "Traceback" not in done.stderr
    assert _count(config_path) == 10


@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_image_root_in_the_config_is_refused(tmp_path, value):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"data": {"image_root": value}, "output": {"dir": "out"}}))
    with pytest.raises(ConfigError, match="data.image_root' is empty"):
        load_config(path)


def test_a_key_given_twice_is_refused_with_its_line(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("data:\n  image_root: photos\noutput:\n  dir: out\ndata:\n  image_root: /tmp\n")
    with pytest.raises(ConfigError, match=r"key 'data' appears twice \(line 5\)"):
        load_config(path)
