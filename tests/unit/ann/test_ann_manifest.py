"""ann.json validation, the backend registry and settings: no store, no FAISS index needed."""

from __future__ import annotations

import json

import pytest

from imagerec.ann import AnnIndexError, AnnMetadata, AnnSettings, backend, kinds, read_manifest
from imagerec.ann.files import AnnFile
from imagerec.ann.manifest import write_manifest
from imagerec.config import Config
from imagerec.layout import Layout

HEX = "ab" * 32


def _meta(**changes) -> AnnMetadata:
    fields = dict(kind="hnsw", model_id="m1", dim=8, count=3, max_image_id=3, data_version=5,
                  params={"M": 16, "ef_construction": 200, "ef_search": 256, "threads": 2}, built_at=1.0e9,
                  built_at_iso="2001-09-09T01:46:40+00:00", build_seconds=0.1, library="faiss", library_version="1.0",
                  metric="inner_product", files=(AnnFile("ann_hnsw.20010909014640-0123abcd.bin", 10, HEX, HEX, 1, 2),))
    fields.update(changes)
    return AnnMetadata(**fields)


def _write_raw(tmp_path, raw) -> Layout:
    layout = Layout.of(tmp_path)
    if isinstance(raw, bytes):
        layout.ann_manifest.write_bytes(raw)
    else:
        layout.ann_manifest.write_text(raw if isinstance(raw, str) else json.dumps(raw))
    return layout


def test_round_trip(tmp_path):
    layout = Layout.of(tmp_path)
    meta = _meta()
    write_manifest(layout, meta)
    raw = json.loads(layout.ann_manifest.read_text())
    assert raw["format"] == "imagerec.ann" and raw["format_version"] == 2 and raw["kind"] == "hnsw"
    assert raw["files"][0] == {"name": meta.files[0].name, "size": 10, "sha256": HEX, "sample_sha256": HEX,
                               "inode": 1, "mtime_ns": 2}
    assert read_manifest(layout) == meta and meta.size_bytes == 10
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def _without(key):
    raw = _meta().to_dict()
    del raw[key]
    return raw


def _with(**changes):
    raw = _meta().to_dict()
    raw.update(changes)
    return raw


def _with_file(**changes):
    raw = _meta().to_dict()
    raw["files"][0].update(changes)
    return raw


BROKEN = {
    "not_json": "{not json",
    "empty": "",
    "list": [1, 2, 3],
    "string": "\"imagerec.ann\"",
    "number": "2",
    "null": "null",
    "not_utf8": b"\xff\xfe\x00garbage",
    "deeply_nested_array": "[" * 200_000 + "]" * 200_000,
    "deeply_nested_value": '{"format": "imagerec.ann", "format_version": 2, "params": ' + "[" * 200_000 + "]" * 200_000 + "}",
    "other_format": _with(format="something.else"),
    "string_format_version": _with(format_version="2"),
    "float_format_version": _with(format_version=2.0),
    "bool_format_version": _with(format_version=True),
    "older_format_version": _with(format_version=1),
    "newer_format_version": _with(format_version=3),
    "missing_dim": _without("dim"),
    "missing_files": _without("files"),
    "missing_model_id": _without("model_id"),
    "missing_data_version": _without("data_version"),
    "string_dim": _with(dim="8"),
    "bool_dim": _with(dim=True),
    "float_count": _with(count=3.5),
    "null_model": _with(model_id=None),
    "params_list": _with(params=[1, 2]),
    "files_dict": _with(files={"name": "x"}),
    "files_empty": _with(files=[]),
    "files_entry_string": _with(files=["ann_hnsw.x.bin"]),
    "zero_dim": _with(dim=0),
    "negative_count": _with(count=-1),
    "file_size_string": _with_file(size="10"),
    "file_missing_sha": {**_meta().to_dict(), "files": [{"name": "ann_hnsw.a.bin", "size": 1}]},
    "file_bad_sha": _with_file(sha256="xyz"),
    "file_name_traversal": _with_file(name="../images.db"),
    "file_name_absolute": _with_file(name="/etc/passwd"),
    "file_name_not_ours": _with_file(name="images.db"),
    "file_twice": {**_meta().to_dict(), "files": [_meta().to_dict()["files"][0]] * 2},
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_manifest_is_an_ann_error(tmp_path, case):
    layout = _write_raw(tmp_path, BROKEN[case])
    with pytest.raises(AnnIndexError, match="run 'build-ann' again") as info:
        read_manifest(layout)
    assert str(layout.ann_manifest) in str(info.value) and "\n" not in str(info.value)


def test_manifest_too_big_is_refused(tmp_path):
    layout = _write_raw(tmp_path, " " * (2 << 20))
    with pytest.raises(AnnIndexError, match="too big"):
        read_manifest(layout)


def test_no_manifest_and_legacy_files(tmp_path):
    layout = Layout.of(tmp_path)
    with pytest.raises(AnnIndexError, match="no ANN index yet.*build-ann"):
        read_manifest(layout)
    (tmp_path / "ann_hnsw.json").write_text("{}")
    with pytest.raises(AnnIndexError, match="ANN index was built by an older imagerec; run 'build-ann' again"):
        read_manifest(layout)


def test_registry():
    assert kinds() == ("hnsw", "ivfpq") and backend("hnsw").kind == "hnsw" and backend("ivfpq").kind == "ivfpq"
    for bad in ("ivf", "", None, "HNSW"):
        with pytest.raises(AnnIndexError, match="unknown ANN index kind"):
            backend(bad)


def test_settings_from_config_are_a_frozen_copy(tmp_path):
    config = Config.model_validate({"data": {"image_root": tmp_path}, "output": {"dir": tmp_path / "out"},
                                    "ann": {"threads": 3, "build_chunk": 500, "verify": "always", "hnsw": {"M": 8}}})
    settings = AnnSettings.from_config(config)
    assert settings.kind == "auto"  # resolved per collection by build-ann, read from the manifest by load
    settings = settings.for_kind("hnsw")
    assert settings.kind == "hnsw" and settings.threads == 3 and settings.build_chunk == 500 and settings.verify == "always"
    assert settings.params == {"M": 8, "ef_construction": 200, "ef_search": None, "fill_level0": True}
    with pytest.raises(AttributeError):
        settings.kind = "other"  # type: ignore[misc]
    assert backend(settings.kind)(settings).build_params() == {"M": 8, "ef_construction": 200, "ef_search": None,
                                                              "fill_level0": True, "threads": 3}
