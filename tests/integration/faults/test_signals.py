"""Ctrl-C (SIGINT to the whole process group) at start-up, mid-run and near the end of ``index`` and
``train-embeddings``, repeated: every try exits 130, prints no traceback, acknowledges the Ctrl-C within
about a second and leaves no process behind. A second Ctrl-C during a checkpoint save keeps it loadable."""

from __future__ import annotations

import shutil
import time

import pytest
import torch
from fault_procs import Run, clean_stderr, copy_sample, image_rows, write_config

ACK_S = 1.5  # the "stopping…" line must appear this soon after Ctrl-C (the run may take longer to end)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return copy_sample(tmp_path_factory.mktemp("signals") / "photos")




def _ack_delay(run: Run, sent: float, word: str = "stopping") -> float | None:
    while time.monotonic() - sent < 10 and run.proc.poll() is None:
        if word in run.stderr():
            return time.monotonic() - sent
        time.sleep(0.02)
    return time.monotonic() - sent if word in run.stderr() else None


def _check_stopped(run: Run, *, may_finish: bool, acked: float | None, need_ack: bool) -> list[str]:
    """Every problem of one interrupted run (empty when it behaved)."""
    rc = run.proc.wait(timeout=120)
    problems = []
    if rc != 130 and not (may_finish and rc == 0):
        problems.append(f"exit {rc}")
    if not clean_stderr(run.stderr()):
        problems.append("traceback: " + run.stderr()[-600:])
    if need_ack and rc == 130 and (acked is None or acked > ACK_S):
        problems.append(f"Ctrl-C acknowledged after {acked} s")
    if orphans := run.orphans_after(5):
        problems.append(f"left running: {orphans}")
    return problems


STARTUP_DELAYS = (0.0, 0.15, 0.4, 0.8)  # after the first child appears: the workers are still importing
TOTAL = 300  # photos in the sample copy
FINISHED = "finished before the Ctrl-C"


def _index_try(tmp_path, photos, tiny_model_file, name: str, when, delay: float = 0.0) -> list[str]:
    out = tmp_path / name
    out.mkdir()
    shutil.copy(tiny_model_file, out / "embedding_model.pt")
    config = write_config(tmp_path / f"{name}.yaml", photos, out)
    run = Run(config, tmp_path, name, "index", "--quiet")
    try:
        if not run.wait_until(lambda: when(run, out / "images.db")):
            return [] if run.proc.returncode == 0 and when is _late else [f"finished first: {run.stderr()[-300:]}"]
        time.sleep(delay)
        sent = run.sigint()
        acked = _ack_delay(run, sent)
        problems = _check_stopped(run, may_finish=when is _late, acked=acked, need_ack=when is not _starting)
        if when is _starting and problems == ["exit 0"] and image_rows(out / "images.db") == TOTAL:
            return [FINISHED]  # a fast machine: all was indexed before the Ctrl-C landed
        return problems
    finally:
        if run.proc.poll() is None:
            run.kill()


def _starting(run: Run, db) -> bool:
    return run.has_children()  # the first worker (or the resource tracker) is being spawned right now


def _mid(run: Run, db) -> bool:
    return image_rows(db) >= 16


def _late(run: Run, db) -> bool:
    return image_rows(db) >= 270


@pytest.mark.parametrize("when,tries", [(_starting, 4), (_mid, 2), (_late, 2)], ids=["start-up", "mid-run", "end"])
def test_ctrl_c_during_index_exits_130_cleanly(tmp_path, photos, tiny_model_file, when, tries):
    delays = STARTUP_DELAYS if when is _starting else (0.0,) * tries
    failures = {f"try {i}": p for i, d in enumerate(delays)
                if (p := _index_try(tmp_path, photos, tiny_model_file, f"i{i}", when, d))}
    finished = [name for name, p in failures.items() if p == [FINISHED]]
    assert len(finished) <= len(delays) // 2, failures  # most tries must really be interrupted
    assert not {name: p for name, p in failures.items() if name not in finished}, failures


def _train_try(tmp_path, photos, name: str, stage: str, second_after: float | None, delay: float = 0.0) -> list[str]:
    out = tmp_path / name
    config = write_config(tmp_path / f"{name}.yaml", photos, out, train={"epochs": 3})
    run = Run(config, tmp_path, name, "train-embeddings", "--quiet")
    conditions = {
        "start-up": run.has_children,
        "mid-run": lambda: any((out / "cache").glob("train_*.json")),
        "end": lambda: (out / "train_log.jsonl").exists() and len((out / "train_log.jsonl").read_text().splitlines()) >= 2,
    }
    try:
        if not run.wait_until(conditions[stage]):
            return [] if run.proc.returncode == 0 and stage == "end" else [f"finished first: {run.stderr()[-300:]}"]
        time.sleep(delay)
        sent = run.sigint()
        if second_after is not None:
            time.sleep(second_after)
            if run.proc.poll() is None:
                run.sigint()
        acked = _ack_delay(run, sent)
        problems = _check_stopped(run, may_finish=stage == "end", acked=acked, need_ack=stage != "start-up")
        ckpt = out / "checkpoints" / "checkpoint.pt"
        if ckpt.exists():
            try:
                torch.load(ckpt, map_location="cpu", weights_only=True)
            except Exception as exc:
                problems.append(f"checkpoint damaged: {exc}")
        return problems
    finally:
        if run.proc.poll() is None:
            run.kill()


@pytest.mark.parametrize("stage,seconds", [("start-up", [None] * 4), ("mid-run", [None, 0.05, 0.2, 0.5]),
                                           ("end", [None])])
def test_ctrl_c_during_train_exits_130_cleanly(tmp_path, photos, stage, seconds):
    delays = STARTUP_DELAYS if stage == "start-up" else (0.0,) * len(seconds)
    failures = {f"try {i}": p for i, (s, d) in enumerate(zip(seconds, delays))
                if (p := _train_try(tmp_path, photos, f"t{i}", stage, s, d))}
    assert not failures, failures
