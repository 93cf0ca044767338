"""train-embeddings end to end: the training cache, a tiny run, exact resume, Ctrl-C, atomic checkpoints,
progress events and the summary's JSON form."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from imagerec.data import loading
from imagerec.cli import cli
from imagerec.config import load_config
from imagerec.errors import ConfigError, TrainError
from imagerec.embed.files import load_model
from imagerec.data.scan import scan_images
from imagerec.progress import ProgressEvent
from imagerec.train.cache import open_or_build_cache
from imagerec.train.data import select_files as _select_files
from imagerec.train.settings import TrainSettings
from imagerec.train.run import Trainer, train_embeddings

TINY = {"image_size": 32, "epochs": 2, "batch_size": 8, "val_fraction": 0.25, "workers": 1,
        "warmup_epochs": 0.5, "seed": 3}


@pytest.fixture
def image_root(tmp_path, make_image) -> Path:
    """3 class folders x 8 small JPEGs, plus one broken file."""
    root = tmp_path / "photos"
    for c, name in enumerate(["cats", "dogs", "boats"]):
        for i in range(8):
            make_image(root / name / f"{i:02d}.jpg", size=(40 + 4 * c, 32), seed=100 * c + i, fmt="JPEG")
    (root / "dogs" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


@pytest.fixture
def config(image_root, write_config):
    path = write_config(image_root, runtime={"device": "cpu", "threads": 2}, train=TINY)
    return load_config(path)


def _state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _log_lines(config) -> list[dict]:
    return [json.loads(line) for line in (config.output.dir / "train_log.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------------- cache


def test_cache_is_built_once_reused_and_rebuilt_when_files_change(config, image_root, make_image):
    load = loading.LoadSettings(config.index.formats, config.index.max_image_pixels, 32)
    files = list(scan_images(image_root))
    first = open_or_build_cache(image_root, files, 32, config.output.layout.cache_dir, load, workers=1)
    assert first.built and first.decoded == 25 and first.images.shape == (25, 32, 32, 3)
    assert [p for p, _ in first.skipped] == ["dogs/broken.jpg"] and first.ok.sum() == 24
    data_file = next(config.output.layout.cache_dir.glob("train_*.u8"))
    mtime = data_file.stat().st_mtime_ns

    again = open_or_build_cache(image_root, files, 32, config.output.layout.cache_dir, load, workers=1)
    assert not again.built and again.decoded == 0 and again.key == first.key
    assert data_file.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(np.asarray(again.images), np.asarray(first.images))

    make_image(image_root / "cats" / "new.jpg", size=(40, 32), seed=999, fmt="JPEG")
    changed = open_or_build_cache(image_root, list(scan_images(image_root)), 32, config.output.layout.cache_dir, load, workers=2)
    assert changed.built and changed.key != first.key and len(changed.paths) == 26
    assert sorted(p.name for p in config.output.layout.cache_dir.iterdir()) == sorted(
        [f"train_{changed.key}.u8", f"train_{changed.key}.json"])  # the stale cache is gone
    row = changed.paths.index("cats/00.jpg")
    np.testing.assert_array_equal(changed.images[row], first.images[first.paths.index("cats/00.jpg")])


def test_subset_is_seeded_and_bounded(config):
    small = config.with_overrides({"train.max_images": 10})
    picked = select_files(small)
    assert len(picked) == 10 and picked == select_files(small)
    assert picked != select_files(small.with_overrides({"train.seed": 4}))
    assert [f.rel_path for f in picked] == sorted(f.rel_path for f in picked)


def test_file_list_restricts_training_files(config, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("cats/00.jpg\ndogs/01.jpg\nboats/02.jpg\n")
    picked = select_files(config.with_overrides({"train.file_list": listing}))
    assert [f.rel_path for f in picked] == [b"boats/02.jpg", b"cats/00.jpg", b"dogs/01.jpg"]


# ------------------------------------------------------------------------------------ end to end


def test_cli_trains_a_model_the_indexer_uses(config, image_root):
    result = CliRunner().invoke(cli, ["--config", str(config.source), "train-embeddings", "--epochs", "2", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "epoch 2/2" in result.output and "val_P@10" in result.output and "dogs/broken.jpg" in result.output

    model = load_model(config.output.layout.model)
    assert model.spec.image_size == 32 and model.spec.stem == "imagenet"
    assert model.info["dataset_size"] == 24 and model.info["train_images"] == 18 and model.info["best_metric"] == "val_p@10"
    assert set(model.backbone.state_dict()) == set(_state(config.output.layout.checkpoints_dir / "checkpoint.pt")["backbone"])
    lines = _log_lines(config)
    assert [line["epoch"] for line in lines] == [1, 2]
    assert all(line["val_loss"] is not None and 0 <= line["val_p_at_10"] <= 1 for line in lines)

    from imagerec.indexing.run import index_collection

    summary = index_collection(config.with_overrides({"index.workers": 1}))
    assert summary.model_id == model.model_id and summary.indexed == 24 and not summary.model_missing


def test_resume_after_epoch_equals_uninterrupted_run(config, tmp_path):
    straight = config.with_overrides({"output.dir": tmp_path / "straight"})
    events: list[ProgressEvent] = []
    full = train_embeddings(straight, progress=events.append)
    assert full.epochs_done == 2 and not full.interrupted
    decode = [e for e in events if e.stage == "decode"]
    assert decode and decode[-1].done == decode[-1].total == 25 and events[: len(decode)] == decode
    # 18 training images, batch 8 asked: 3 steps of 6 (all 18 images) per epoch; an event at the start and after each step
    assert [(e.stage, e.done, e.total) for e in events[len(decode):]] == [
        ("epoch 1/2", 0, 18), ("epoch 1/2", 6, 18), ("epoch 1/2", 12, 18), ("epoch 1/2", 18, 18),
        ("epoch 2/2", 0, 18), ("epoch 2/2", 6, 18), ("epoch 2/2", 12, 18), ("epoch 2/2", 18, 18)]
    assert events[-1].counters == {"step": 6}
    as_json = json.loads(json.dumps(full.to_dict(), allow_nan=False))
    assert as_json["model_path"] == str(straight.output.layout.model) and as_json["epochs_done"] == 2
    assert as_json["skipped"] == [["dogs/broken.jpg", full.skipped[0][1]]]
    assert [h["epoch"] for h in as_json["history"]] == [1, 2] and as_json["history"][1] == _log_lines(straight)[1]

    split = config.with_overrides({"output.dir": tmp_path / "split"})
    first = train_embeddings(split, on_epoch=lambda entry: entry.epoch == 1)
    assert first.interrupted and first.epochs_done == 1
    assert _state(split.output.layout.checkpoints_dir / "checkpoint.pt")["state"]["epoch"] == 1
    second = train_embeddings(split, resume=True)
    assert second.start_epoch == 1 and second.epochs_done == 2 and not second.interrupted
    assert [line["epoch"] for line in _log_lines(split)] == [1, 2]
    assert _log_lines(split)[1]["train_loss"] == pytest.approx(_log_lines(straight)[1]["train_loss"], rel=1e-5)
    _assert_same_weights(straight, split)


def test_ctrl_c_mid_epoch_checkpoints_and_resumes_exactly(config, tmp_path, monkeypatch):
    straight = config.with_overrides({"output.dir": tmp_path / "straight"})
    train_embeddings(straight)

    real_step = Trainer.step
    calls = {"n": 0}

    def step_then_ctrl_c(self, images):
        loss = real_step(self, images)
        calls["n"] += 1
        if calls["n"] == 4:  # during the first step of epoch 2 (3 steps per epoch)
            os.kill(os.getpid(), signal.SIGINT)
        return loss

    interrupted = config.with_overrides({"output.dir": tmp_path / "interrupted"})
    handler_before = signal.getsignal(signal.SIGINT)
    monkeypatch.setattr(Trainer, "step", step_then_ctrl_c)
    stopped = train_embeddings(interrupted)
    monkeypatch.undo()
    assert stopped.interrupted and stopped.epochs_done == 1
    saved = _state(interrupted.output.layout.checkpoints_dir / "checkpoint.pt")["state"]
    assert (saved["epoch"], saved["step_in_epoch"], saved["global_step"]) == (1, 1, 4)
    assert signal.getsignal(signal.SIGINT) is handler_before  # handler restored

    events: list[ProgressEvent] = []
    resumed = train_embeddings(interrupted, resume=True, progress=events.append)
    assert resumed.epochs_done == 2
    assert [(e.stage, e.done, e.total) for e in events] == [("epoch 2/2", 6, 18), ("epoch 2/2", 12, 18), ("epoch 2/2", 18, 18)]  # cache reused
    _assert_same_weights(straight, interrupted)


def _assert_same_weights(a, b) -> None:
    sa, sb = (_state(c.output.layout.checkpoints_dir / "checkpoint.pt") for c in (a, b))
    for part in ("backbone", "head"):
        for name, tensor in sa[part].items():
            torch.testing.assert_close(sb[part][name], tensor, rtol=1e-5, atol=1e-6, msg=f"{part}.{name}")
    assert sa["state"]["global_step"] == sb["state"]["global_step"]
    assert torch.equal(sa["rng"]["augment"], sb["rng"]["augment"])


def test_failed_checkpoint_write_keeps_the_previous_one(config, monkeypatch):
    one_epoch = config.with_overrides({"train.epochs": 1})
    train_embeddings(one_epoch)
    ckpt = config.output.layout.checkpoints_dir / "checkpoint.pt"
    before = ckpt.read_bytes()

    import imagerec.embed.files as model_module

    def half_written(payload, fh):
        fh.write(b"PK\x03\x04 half of a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(model_module.torch, "save", half_written)
    with pytest.raises(OSError, match="No space"):
        train_embeddings(config, resume=True)  # epoch 2 ends with a save that fails
    monkeypatch.undo()
    assert ckpt.read_bytes() == before
    assert _state(ckpt)["state"]["epoch"] == 1
    assert not [p for p in ckpt.parent.iterdir() if p.name != "checkpoint.pt"]  # no temp files left
    load_model(config.output.layout.model)  # the model file survived too


def test_resume_without_checkpoint_is_a_one_line_error(config):
    result = CliRunner().invoke(cli, ["--config", str(config.source), "train-embeddings", "--resume", "--quiet"])
    assert result.exit_code == 1 and "no checkpoint" in result.output and "Traceback" not in result.output


def test_resume_refuses_a_different_image_set(config, make_image, image_root):
    train_embeddings(config.with_overrides({"train.epochs": 1}))
    make_image(image_root / "boats" / "extra.jpg", size=(40, 32), seed=7, fmt="JPEG")
    with pytest.raises(TrainError, match="cache_key"):
        train_embeddings(config, resume=True)


def test_train_config_is_validated(image_root, write_config):
    with pytest.raises(ConfigError, match="train.temperature"):
        load_config(write_config(image_root, train={"temperature": 0}))
    with pytest.raises(ConfigError, match="unknown key 'train.epoch'"):
        load_config(write_config(image_root, train={"epoch": 3}))


def test_too_few_images_is_an_error(tmp_path, make_image, write_config):
    make_image(tmp_path / "one" / "a.jpg", fmt="JPEG")
    with pytest.raises(TrainError, match="at least 2"):
        train_embeddings(load_config(write_config(tmp_path / "one", train=TINY)))


def select_files(config):
    """The training file selection of ``config`` (settings taken from it once, as ``train_embeddings`` does)."""
    return _select_files(TrainSettings.from_config(config))
