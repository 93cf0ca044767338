"""The default config on a real folder: the pretrained EfficientNet-Lite0 embeds from the first ``index``
(no training), neighbours are category-level, re-runs do nothing; fine-tuning keeps a model only when
it beats the pretrained start and trains only the last stages; training never re-decodes files the index recorded as broken."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from imagerec.cli import cli
from imagerec.config import load_config
from imagerec.embed import pretrained_model
from imagerec.embed.base import architecture
from imagerec.embed.files import pretrained_backbone
from imagerec.train.data import select_files
from imagerec.train.settings import TrainSettings

SAMPLE = Path(__file__).resolve().parents[2] / "sample" / "caltech101-mini"
CLASSES = ("Leopards", "airplanes", "watch")
SIZE = 128  # the default is 224; smaller keeps the test quick and exercises the same path


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pretrained") / "photos"
    for name in CLASSES:
        (root / name).mkdir(parents=True)
        for path in sorted((SAMPLE / name).glob("*.jpg"))[:10]:
            shutil.copy(path, root / name / path.name)
    return root


def _config(tmp_path: Path, photos: Path, **sections) -> Path:
    raw = {"data": {"image_root": str(photos)}, "output": {"dir": str(tmp_path / "out")},
           "runtime": {"device": "cpu", "threads": 2}, "index": {"workers": 2, "batch_size": 16},
           "model": {"input_size": SIZE}, **sections}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _run(config: Path, *args: str):
    result = CliRunner().invoke(cli, ["--config", str(config), *args], obj={})
    assert result.exit_code == 0, result.output + (result.stderr or "")
    return result


def test_default_config_embeds_with_the_pretrained_model_before_any_training(tmp_path, photos):
    config = _config(tmp_path, photos)
    first = _run(config, "index", "-q")
    assert "30 new" in first.output and "note: no embedding model" not in first.output
    status = json.loads(_run(config, "status", "--json").output)
    assert status["model_id"] == pretrained_model("efficientnet_lite0", SIZE).model_id
    assert status["with_embedding"] == 30 and status["model_init"] == "imagenet"
    again = _run(config, "index", "-q")
    assert "0 new, 0 updated, 0 embeddings added, 30 unchanged" in again.output  # the same id: nothing re-embedded
    _run(config, "build-ann")
    query = _run(config, "query", "--image", str(photos / "Leopards" / "image_0002.jpg"), "--top-k", "5", "--json")
    results = json.loads(query.output)
    assert [r["relpath"].split("/")[0] for r in results] == ["Leopards"] * 5
    table = _run(config, "query", "--id", "1", "--top-k", "3").output
    assert "weights embedding 0.85, color 0.00, dhash 0.15" in table  # the pretrained model's defaults
    report = json.loads(_run(config, "evaluate", "--json").output)
    assert report["signals"]["embedding"]["p@5"] >= 0.9  # category-level neighbours with no training at all
    assert report["signals"]["embedding"]["p@5"] > report["signals"]["color"]["p@5"] + 0.1
    assert report["signals"]["fused"]["p@5"] >= report["signals"]["embedding"]["p@5"] - 0.02


def test_fine_tuning_that_loses_to_the_pretrained_start_writes_no_model(tmp_path, photos):
    train = {"epochs": 1, "batch_size": 8, "val_fraction": 0.3, "workers": 1, "lr": 10.0, "image_size": 64}
    config = _config(tmp_path, photos, train=train)
    result = _run(config, "train-embeddings", "-q")
    assert "pretrained start: val P@10" in result.output
    assert "no epoch beat the pretrained start" in result.output and "pretrained efficientnet_lite0" in result.output
    assert not (tmp_path / "out" / "embedding_model.pt").exists()
    assert (tmp_path / "out" / "checkpoints" / "checkpoint.pt").exists()  # the run itself is kept, for --resume


def test_fine_tuning_trains_only_the_last_stages_and_records_it(tmp_path, photos):
    train = {"epochs": 1, "batch_size": 8, "val_fraction": 0.3, "workers": 1, "lr": 0.5, "image_size": 64}
    config = _config(tmp_path, photos, train=train)
    result = _run(config, "train-embeddings", "-q")
    assert "training the last 2 of 9 backbone stages" in result.output
    checkpoint = torch.load(tmp_path / "out" / "checkpoints" / "checkpoint.pt", weights_only=True)
    assert checkpoint["compat"]["fixed_stages"] == 7
    start = pretrained_backbone(architecture("efficientnet_lite0").spec(64)).state_dict()
    trained = checkpoint["backbone"]
    fixed = [k for k in start if not k.startswith(("net._blocks.15.", "net._conv_head.", "net._bn1."))]
    assert len(fixed) > 200 and all(torch.equal(trained[k], start[k]) for k in fixed)  # batch-norm statistics too
    assert not torch.equal(trained["net._conv_head.weight"], start["net._conv_head.weight"])
    assert not torch.equal(trained["net._blocks.15._bn2.running_var"], start["net._blocks.15._bn2.running_var"])
    resumed = _config(tmp_path, photos, train={**train, "epochs": 2, "trainable_stages": 3})
    refused = CliRunner().invoke(cli, ["--config", str(resumed), "train-embeddings", "--resume"], obj={})
    assert refused.exit_code != 0 and "fixed_stages 7 → 6" in refused.output  # a checkpoint resumes only as it began


def test_training_does_not_decode_files_the_index_recorded_as_broken(tmp_path, photos):
    root = tmp_path / "photos"
    shutil.copytree(photos, root)
    (root / "watch" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    config = _config(tmp_path, root, model={"arch": "resnet18", "init": "random"})
    _run(config, "index", "-q")
    status = json.loads(_run(config, "status", "--json").output)
    assert status["skipped"] == 1
    chosen = [f.rel_path for f in select_files(TrainSettings.from_config(load_config(config)))]
    assert len(chosen) == 30 and b"watch/broken.jpg" not in chosen
    (root / "watch" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 changed, still broken, not yet seen by index")
    chosen = [f.rel_path for f in select_files(TrainSettings.from_config(load_config(config)))]
    assert b"watch/broken.jpg" in chosen  # a changed file is tried again
