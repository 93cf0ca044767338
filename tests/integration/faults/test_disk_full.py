"""A full disk while ``train-embeddings`` writes its cache, checkpoint or model file: one line
"disk full at PATH, nothing was lost; free N MB and re-run", a non-zero exit (not SIGBUS), the previous
files intact, no temporary file left and no worker left running.

The disk is a small tmpfs where mounting is allowed (CI runs as root) and otherwise a file size limit
(``RLIMIT_FSIZE`` with SIGXFSZ ignored, so writes fail with EFBIG): never skipped.
"""

from __future__ import annotations

import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest
from fault_procs import Run, clean_stderr, copy_sample, fsize_limit, write_config

CACHE_BYTES = 96 * 32 * 32 * 3  # train.max_images x image_size^2 x RGB


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return copy_sample(tmp_path_factory.mktemp("diskfull") / "photos")


@contextmanager
def small_disk(folder: Path, size: int, how: str):
    """``folder`` with only ``size`` bytes of room; yields the preexec_fn the run needs (None on tmpfs)."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = how == "tmpfs" and subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                                                capture_output=True).returncode == 0
    try:
        yield None if mounted else fsize_limit(size)
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], check=False)


def _assert_one_line_disk_full(run: Run, *paths: Path) -> str:
    rc = run.proc.wait(timeout=300)
    err = run.stderr()
    assert rc not in (0, -7, 135), f"exit {rc}: {err[-1000:]}"  # -7: SIGBUS
    assert clean_stderr(err), err[-2000:]
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "disk full at" in lines[0] and "nothing was lost" in lines[0], err[-1000:]
    assert any(str(p) in lines[0] for p in paths), lines[0]
    assert "MB and re-run" in lines[0]
    assert run.orphans_after(5) == []
    return lines[0]


def _temps(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*.tmp")]


@pytest.mark.parametrize("how", ["tmpfs", "rlimit"])
def test_disk_full_while_building_the_training_cache(tmp_path, photos, how):
    out = tmp_path / "out"
    with small_disk(out, CACHE_BYTES // 3, how) as preexec:
        config = write_config(tmp_path / "c.yaml", photos, out)
        run = Run(config, tmp_path, "train", "train-embeddings", "--quiet", **({"preexec": preexec} if preexec else {}))
        _assert_one_line_disk_full(run, out / "cache")
        assert _temps(out) == []
        assert not list((out / "cache").glob("train_*.json"))  # no cache claims to be complete


@pytest.mark.parametrize("how", ["tmpfs", "rlimit"])
def test_disk_full_while_saving_checkpoint_or_model_keeps_the_previous_ones(tmp_path, photos, how):
    first = tmp_path / "first"
    config = write_config(tmp_path / "c1.yaml", photos, first, train={"epochs": 1})
    done = Run(config, tmp_path, "first", "train-embeddings", "--quiet")
    assert done.proc.wait(timeout=300) == 0, done.stderr()
    used = sum(p.stat().st_size for p in first.rglob("*") if p.is_file())
    out = tmp_path / "out"
    with small_disk(out, used + 2_000_000, how) as preexec:
        shutil.copytree(first, out, dirs_exist_ok=True)
        ckpt, model = out / "checkpoints" / "checkpoint.pt", out / "embedding_model.pt"
        before = {p: p.read_bytes() for p in (ckpt, model)}
        config = write_config(tmp_path / "c2.yaml", photos, out, train={"epochs": 2})
        run = Run(config, tmp_path, "resume", "train-embeddings", "--resume", "--quiet",
                  **({"preexec": fsize_limit(2_000_000)} if preexec else {}))
        _assert_one_line_disk_full(run, ckpt, model)
        assert {p: p.read_bytes() for p in (ckpt, model)} == before  # nothing was lost
        assert _temps(out) == []
