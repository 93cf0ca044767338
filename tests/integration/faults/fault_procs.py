"""Shared by the process fault tests: real ``imagerec`` runs in their own session, signalled and watched."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import yaml
from ann_support import SAMPLE_DIR

TRAIN_TINY = {"image_size": 32, "epochs": 2, "batch_size": 16, "val_fraction": 0.25, "workers": 2,
              "warmup_epochs": 0.5, "seed": 3, "max_images": 96}
BAD_STDERR = ("Traceback", "Fatal Python error", "KeyboardInterrupt")


def copy_sample(dest: Path) -> Path:
    """The bundled 300-photo sample under ``dest``."""
    shutil.copytree(SAMPLE_DIR, dest)
    return dest


def write_config(path: Path, image_root: Path, out: Path, **sections) -> Path:
    raw = {"data": {"image_root": str(image_root)}, "output": {"dir": str(out)},
           "runtime": {"device": "cpu", "threads": 1}, "index": {"workers": 2, "batch_size": 16},
           "train": dict(TRAIN_TINY), "model": {"arch": "resnet18", "init": "random"}}
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    path.write_text(yaml.safe_dump(raw))
    return path


def _sigint_default() -> None:
    # A shell running the suite in the background hands SIGINT down as ignored; a user's Ctrl-C is not.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def fsize_limit(limit: int):
    """A preexec_fn: files may not grow past ``limit`` bytes and SIGXFSZ is ignored, so writes fail with EFBIG."""

    def preexec() -> None:
        _sigint_default()
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


class Run:
    """``python -m imagerec --config C ARGS`` in its own session; stdout and stderr go to files."""

    def __init__(self, config: Path, tmp: Path, name: str, *args: str, preexec=_sigint_default):
        self.out, self.err = tmp / f"{name}.out", tmp / f"{name}.err"
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "imagerec", "--config", str(config), *args],
                                         stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True,
                                         preexec_fn=preexec)
        self.pid = self.proc.pid

    def group(self) -> list[psutil.Process]:
        """Live processes of this run (its process group), the parent included while it lives."""
        found = []
        for proc in psutil.process_iter(["status"]):
            try:
                if os.getpgid(proc.pid) == self.pid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                    found.append(proc)
            except (ProcessLookupError, psutil.Error):
                pass
        return found

    def wait_until(self, condition, timeout: float = 90, poll: float = 0.01) -> bool:
        """Poll ``condition()`` until it holds (True) or the run ends first (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(poll)
        raise AssertionError(f"condition not met within {timeout} s: {self.stderr()[-2000:]}")

    def has_children(self) -> bool:
        try:
            return bool(psutil.Process(self.pid).children())
        except psutil.Error:
            return False

    def sigint(self) -> float:
        os.killpg(self.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
        return time.monotonic()

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def orphans_after(self, seconds: float) -> list[str]:
        """What is still alive of this run ``seconds`` after its parent ended (should be nothing)."""
        deadline = time.monotonic() + seconds
        while (left := self.group()) and time.monotonic() < deadline:
            time.sleep(0.1)
        return [" ".join(p.cmdline()[:4]) for p in left if p.is_running()]

    def kill(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)


def clean_stderr(text: str) -> bool:
    return not any(bad in text for bad in BAD_STDERR)


def image_rows(db: Path) -> int:
    """Rows in ``images`` of the database at ``db`` as another process sees it now (0 before it exists)."""
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute("SELECT COUNT(*) FROM images").fetchone()[0]
        finally:
            con.close()
    except sqlite3.DatabaseError:
        return 0
