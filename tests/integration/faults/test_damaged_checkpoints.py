"""Damaged checkpoints and model files are refused with one line, never used silently.

A real one-epoch training run writes the files; the tests flip 64-byte blocks at several offsets,
drop keys and change types, then resume / load. Files without a checksum (written before it existed)
are still accepted when their structure is sound.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from imagerec.cli import cli
from imagerec.config import load_config
from imagerec.embed.files import load_model
from imagerec.errors import ModelFileError, TrainError
from imagerec.train.run import train_embeddings

TINY = {"image_size": 32, "epochs": 1, "batch_size": 8, "val_fraction": 0.25, "workers": 1, "warmup_epochs": 0.5, "seed": 3}
FLIP_AT = (0.1, 0.3, 0.5, 0.7, 0.9, 0.97)  # fractions of the file size


@pytest.fixture(scope="module")
def trained(tmp_path_factory, make_image_module):
    """(image root, output dir) of a finished one-epoch run; copy before changing anything."""
    base = tmp_path_factory.mktemp("damaged")
    root = base / "photos"
    for c, name in enumerate(["cats", "dogs", "boats"]):
        for i in range(8):
            make_image_module(root / name / f"{i:02d}.jpg", size=(40 + 4 * c, 32), seed=100 * c + i)
    train_embeddings(_config(base, root, base / "out"))
    return root, base / "out"


@pytest.fixture(scope="module")
def make_image_module():
    import numpy as np
    from PIL import Image

    def _make(path: Path, size, seed):
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels, "RGB").save(path, format="JPEG")

    return _make


def _config(base: Path, root: Path, out: Path, epochs: int = 1):
    import yaml

    path = base / f"config_{out.name}.yaml"
    path.write_text(yaml.safe_dump({"data": {"image_root": str(root)}, "output": {"dir": str(out)},
                                    "runtime": {"device": "cpu", "threads": 1}, "train": {**TINY, "epochs": epochs}, "model": {"arch": "resnet18", "init": "random"}}))
    return load_config(path)


def _copy(trained, tmp_path: Path):
    root, out = trained
    shutil.copytree(out, tmp_path / "out")
    return _config(tmp_path, root, tmp_path / "out", epochs=2), tmp_path / "out" / "checkpoints" / "checkpoint.pt"


def _flip(path: Path, fraction: float) -> None:
    data = bytearray(path.read_bytes())
    at = int(len(data) * fraction)
    data[at:at + 64] = bytes(b ^ 0xFF for b in data[at:at + 64])
    path.write_bytes(bytes(data))


def _expect_train_error(config, path: Path) -> str:
    with pytest.raises(TrainError) as info:
        train_embeddings(config, resume=True)
    message = str(info.value)
    assert str(path) in message and "\n" not in message and info.value.__cause__ is None
    return message


@pytest.mark.parametrize("fraction", FLIP_AT)
def test_flipped_block_in_checkpoint_is_refused(trained, tmp_path, fraction):
    config, ckpt = _copy(trained, tmp_path)
    _flip(ckpt, fraction)
    _expect_train_error(config, ckpt)


def test_flipped_checkpoint_is_one_line_in_the_cli(trained, tmp_path):
    config, ckpt = _copy(trained, tmp_path)
    _flip(ckpt, 0.5)
    result = CliRunner().invoke(cli, ["--config", str(config.source), "train-embeddings", "--resume", "-q"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert [line for line in result.output.splitlines() if line.startswith("error:")][0].count(str(ckpt)) == 1


def _rewrite(path: Path, change) -> None:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    payload.pop("checksum", None)  # as written before checksums: only the structural checks apply
    torch.save(change(payload), path)


BAD_CHECKPOINTS = {
    "no compat": lambda p: {k: v for k, v in p.items() if k != "compat"},
    "no state": lambda p: {k: v for k, v in p.items() if k != "state"},
    "no optimizer": lambda p: {k: v for k, v in p.items() if k != "optimizer"},
    "no rng.augment": lambda p: {**p, "rng": {k: v for k, v in p["rng"].items() if k != "augment"}},
    "state is a list": lambda p: {**p, "state": [1, 2]},
    "epoch is a string": lambda p: {**p, "state": {**p["state"], "epoch": "1"}},
    "state key missing": lambda p: {**p, "state": {k: v for k, v in p["state"].items() if k != "global_step"}},
    "backbone is a list": lambda p: {**p, "backbone": [1]},
    "format_version is a string": lambda p: {**p, "format_version": "1"},
    "head weights of the wrong shape": lambda p: {**p, "head": {k: torch.zeros(3) for k in p["head"]}},
}


@pytest.mark.parametrize("name", BAD_CHECKPOINTS)
def test_structurally_damaged_checkpoint_is_a_one_line_train_error(trained, tmp_path, name):
    config, ckpt = _copy(trained, tmp_path)
    _rewrite(ckpt, BAD_CHECKPOINTS[name])
    _expect_train_error(config, ckpt)


def test_sound_checkpoint_without_checksum_still_resumes(trained, tmp_path):
    config, ckpt = _copy(trained, tmp_path)
    _rewrite(ckpt, lambda p: p)
    assert train_embeddings(config, resume=True).epochs_done == 2


BAD_MODELS = {
    "format_version is a string": lambda p: {**p, "format_version": "1"},
    "format_version is None": lambda p: {**p, "format_version": None},
    "spec is a list": lambda p: {**p, "spec": [1, 2]},
    "state_dict is a list": lambda p: {**p, "state_dict": [1]},
    "state_dict value not a tensor": lambda p: {**p, "state_dict": {**p["state_dict"], "conv1.weight": "x"}},
    "model_id is an int": lambda p: {**p, "model_id": 7},
    "info is a list": lambda p: {**p, "info": [1]},
}


@pytest.mark.parametrize("name", BAD_MODELS)
def test_model_file_with_wrong_types_is_a_model_file_error(trained, tmp_path, name):
    _, out = trained
    path = tmp_path / "embedding_model.pt"
    shutil.copy(out / "embedding_model.pt", path)
    _rewrite(path, BAD_MODELS[name])
    with pytest.raises(ModelFileError) as info:
        load_model(path)
    assert str(path) in str(info.value) and info.value.__cause__ is None


@pytest.mark.parametrize("fraction", FLIP_AT)
def test_flipped_block_in_model_file_is_refused(trained, tmp_path, fraction):
    _, out = trained
    path = tmp_path / "embedding_model.pt"
    shutil.copy(out / "embedding_model.pt", path)
    _flip(path, fraction)
    with pytest.raises(ModelFileError):
        load_model(path)


def test_model_file_without_checksum_still_loads(trained, tmp_path):
    _, out = trained
    path = tmp_path / "embedding_model.pt"
    shutil.copy(out / "embedding_model.pt", path)
    _rewrite(path, lambda p: p)
    assert load_model(path).model_id == load_model(out / "embedding_model.pt").model_id
