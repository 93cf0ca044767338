"""Config profiles: path resolution, validation errors naming file and key, overrides, bundled profiles."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest
import yaml

from imagerec.config import DEFAULT_FORMATS, Config, load_config
from imagerec.errors import ConfigError, ImagerecError

REPO = Path(__file__).resolve().parents[2]


def _write(path: Path, raw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw), encoding="utf-8")
    return path


def _minimal(**sections) -> dict:
    raw = {"data": {"image_root": "photos"}, "output": {"dir": "out"}}
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return raw


def _error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message, f"message does not name the file: {message}"
    assert "\n" not in message, "one-line message expected"
    return message


# -- loading and paths --------------------------------------------------------------------------


def test_relative_paths_resolve_against_config_folder_not_cwd(tmp_path, monkeypatch):
    cfg = _write(tmp_path / "profiles" / "mine.yaml", {"data": {"image_root": "photos"}, "output": {"dir": "../out"}})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(cfg)
    assert config.data.image_root.is_absolute()
    assert config.data.image_root.resolve() == (tmp_path / "profiles" / "photos").resolve()
    assert config.output.dir.resolve() == (tmp_path / "out").resolve()
    assert config.source == cfg


def test_config_path_given_relative_to_cwd(tmp_path, monkeypatch):
    _write(tmp_path / "profiles" / "mine.yaml", _minimal())
    monkeypatch.chdir(tmp_path)
    config = load_config("profiles/mine.yaml")
    assert config.data.image_root.resolve() == (tmp_path / "profiles" / "photos").resolve()
    assert config.data.image_root.is_absolute()


def test_absolute_and_home_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cfg = _write(tmp_path / "cfg" / "c.yaml", {"data": {"image_root": "~/pics"}, "output": {"dir": str(tmp_path / "abs")}})
    config = load_config(cfg)
    assert config.data.image_root == tmp_path / "home" / "pics"
    assert config.output.dir == tmp_path / "abs"


def test_defaults_and_derived_output_paths(tmp_path):
    config = load_config(_write(tmp_path / "c.yaml", _minimal()))
    assert config.runtime.device == "auto" and config.runtime.threads is None
    assert config.index.workers is None and config.index.batch_size == 64
    assert config.index.formats == DEFAULT_FORMATS and config.index.follow_symlinks is False
    assert config.features.histogram.space == "rgb" and config.features.histogram.bins == 8
    out = (tmp_path / "out").resolve()
    assert config.output.layout.db.resolve() == out / "images.db"
    assert config.output.layout.model.resolve() == out / "embedding_model.pt"
    assert config.output.layout.ann_manifest.resolve() == out / "ann.json"
    assert config.output.layout.cache_dir.resolve() == out / "cache"
    assert config.output.layout.checkpoints_dir.resolve() == out / "checkpoints"


def test_values_are_read(tmp_path, write_config):
    cfg = write_config(
        tmp_path / "imgs",
        index={"workers": 3, "batch_size": 7, "formats": ["jpeg", "Png"], "follow_symlinks": True},
        runtime={"device": "cpu", "threads": 2},
        features={"histogram": {"space": "hsv", "bins": 4}},
    )
    config = load_config(cfg)
    assert config.index.workers == 3 and config.index.batch_size == 7
    assert config.index.formats == ("JPEG", "PNG")  # normalised to Pillow's spelling
    assert config.index.follow_symlinks is True
    assert config.runtime.device == "cpu" and config.runtime.threads == 2
    assert config.features.histogram.space == "hsv" and config.features.histogram.bins == 4
    assert config.data.image_root == tmp_path / "imgs"


def test_config_is_immutable(tmp_path):
    config = load_config(_write(tmp_path / "c.yaml", _minimal()))
    with pytest.raises(pydantic.ValidationError):
        config.index.batch_size = 3  # type: ignore[misc]
    assert config.index.batch_size == 64


# -- errors -------------------------------------------------------------------------------------


def test_config_error_is_an_imagerec_error_with_exit_code_2():
    assert issubclass(ConfigError, ImagerecError)
    assert ConfigError.exit_code == 2


@pytest.mark.parametrize(
    ("sections", "key"),
    [
        ({"index": {"wokers": 2}}, "index.wokers"),
        ({"features": {"histogram": {"binz": 8}}}, "features.histogram.binz"),
        ({"extra_section": {"a": 1}}, "extra_section"),
    ],
)
def test_unknown_key(tmp_path, sections, key):
    message = _error(_write(tmp_path / "c.yaml", _minimal(**sections)))
    assert f"'{key}'" in message and "unknown key" in message


@pytest.mark.parametrize(
    ("sections", "key"),
    [
        ({"index": {"batch_size": "many"}}, "index.batch_size"),
        ({"index": {"batch_size": 2.5}}, "index.batch_size"),
        ({"index": {"follow_symlinks": [1]}}, "index.follow_symlinks"),
        ({"index": {"formats": {"a": 1}}}, "index.formats"),
        ({"runtime": {"device": "gpu"}}, "runtime.device"),
        ({"features": {"histogram": {"space": "lab"}}}, "features.histogram.space"),
        ({"data": {"image_root": 123}}, "data.image_root"),
    ],
)
def test_wrong_type(tmp_path, sections, key):
    message = _error(_write(tmp_path / "c.yaml", _minimal(**sections)))
    assert f"'{key}'" in message


@pytest.mark.parametrize(
    ("sections", "key"),
    [
        ({"index": {"batch_size": 0}}, "index.batch_size"),
        ({"index": {"batch_size": 4097}}, "index.batch_size"),
        ({"index": {"workers": 0}}, "index.workers"),
        ({"index": {"max_image_pixels": 0}}, "index.max_image_pixels"),
        ({"index": {"formats": []}}, "index.formats"),
        ({"runtime": {"threads": -1}}, "runtime.threads"),
        ({"features": {"histogram": {"bins": 1}}}, "features.histogram.bins"),
        ({"features": {"histogram": {"bins": 33}}}, "features.histogram.bins"),
    ],
)
def test_out_of_range(tmp_path, sections, key):
    message = _error(_write(tmp_path / "c.yaml", _minimal(**sections)))
    assert f"'{key}'" in message
    value = next(iter(next(iter(sections.values())).values()))
    if isinstance(value, int):
        assert f"got {value!r}" in message  # says what was given


def test_several_problems_are_all_reported(tmp_path):
    message = _error(_write(tmp_path / "c.yaml", _minimal(index={"batch_size": 0, "wokers": 1})))
    assert "'index.batch_size'" in message and "'index.wokers'" in message


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"data": {"image_root": "x"}}, "output"),
        ({"output": {"dir": "x"}}, "data"),
        ({"data": {}, "output": {"dir": "x"}}, "data.image_root"),
        ({"data": {"image_root": "x"}, "output": {}}, "output.dir"),
    ],
)
def test_missing_required_key(tmp_path, raw, key):
    message = _error(_write(tmp_path / "c.yaml", raw))
    assert f"missing key '{key}'" in message


def test_unknown_pillow_format(tmp_path):
    message = _error(_write(tmp_path / "c.yaml", _minimal(index={"formats": ["JPEG", "NOTAFORMAT"]})))
    assert "'index.formats'" in message and "NOTAFORMAT" in message


@pytest.mark.parametrize("text", ["data: [unclosed\n", "data:\n  image_root: a\n bad-indent: b\n", "a: b: c\n"])
def test_invalid_yaml(tmp_path, text):
    message = _error(_write(tmp_path / "c.yaml", text))
    assert "YAML" in message


@pytest.mark.parametrize("text", ["", "# only a comment\n", "- a\n- b\n", "just a string\n"])
def test_top_level_not_a_mapping(tmp_path, text):
    message = _error(_write(tmp_path / "c.yaml", text))
    assert "mapping" in message


@pytest.mark.parametrize("text", ["data: 5\noutput: {dir: x}\n", "data: null\noutput: {dir: x}\n"])
def test_section_not_a_mapping(tmp_path, text):
    message = _error(_write(tmp_path / "c.yaml", text))
    assert "'data" in message


def test_missing_file(tmp_path):
    message = _error(tmp_path / "nope.yaml")
    assert "not found" in message


def test_unreadable_file(tmp_path):
    (tmp_path / "a_dir.yaml").mkdir()
    assert "cannot read" in _error(tmp_path / "a_dir.yaml")
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"data: {image_root: caf\xe9}\noutput: {dir: x}\n")
    assert "cannot read" in _error(bad)


# -- overrides ----------------------------------------------------------------------------------


def test_with_overrides_replaces_values_and_keeps_original(tmp_path):
    config = load_config(_write(tmp_path / "c.yaml", _minimal()))
    new_root = tmp_path / "other"
    changed = config.with_overrides({"index.workers": 3, "data.image_root": new_root, "features.histogram.bins": 4})
    assert changed.index.workers == 3
    assert changed.data.image_root == new_root
    assert changed.features.histogram.bins == 4
    assert changed.source == config.source
    assert changed.output.dir == config.output.dir and changed.index.batch_size == config.index.batch_size
    # the original is untouched
    assert config.index.workers is None and config.features.histogram.bins == 8
    assert config.data.image_root != new_root


def test_with_overrides_ignores_none(tmp_path):
    config = load_config(_write(tmp_path / "c.yaml", _minimal(index={"workers": 5})))
    assert config.with_overrides({"index.workers": None, "data.image_root": None}) == config


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"index.workers": 0}, "index.workers"),
        ({"index.batch_size": "lots"}, "index.batch_size"),
        ({"runtime.device": "tpu"}, "runtime.device"),
        ({"index.formats": ["XYZ"]}, "index.formats"),
        ({"index.wokers": 2}, "index.wokers"),  # unknown leaf
        ({"indx.workers": 2}, "indx.workers"),  # unknown section
        ({"index.batch_size.x": 2}, "index.batch_size.x"),  # below a value, not a section
    ],
)
def test_with_overrides_refuses_bad_values(tmp_path, overrides, key):
    config = load_config(_write(tmp_path / "c.yaml", _minimal()))
    with pytest.raises(ConfigError) as info:
        config.with_overrides(overrides)
    assert f"'{key}'" in str(info.value)
    assert "command-line option" in str(info.value)


def test_config_built_in_code_with_overrides():
    config = Config(data={"image_root": "/x"}, output={"dir": "/y"})
    assert config.source is None
    assert config.with_overrides({"index.batch_size": 9}).index.batch_size == 9


# -- bundled profiles ---------------------------------------------------------------------------


def test_bundled_miniset_profile_loads():
    config = load_config(REPO / "config_miniset.yaml")
    assert config.data.image_root.resolve() == (REPO / "sample" / "caltech101-mini").resolve()
    assert config.data.image_root.is_dir()
    assert config.output.dir.resolve() == (REPO / "data" / "miniset").resolve()
    assert config.index.formats == DEFAULT_FORMATS


def test_bundled_full_profile_loads():
    config = load_config(REPO / "config_full.yaml")
    assert config.data.image_root == Path("/data/image_data")
    assert config.output.dir.resolve() == (REPO / "data" / "full").resolve()
    assert config.index.batch_size == 128
