"""Helpers of the web tests: a small real collection (sample photos) and a real ``imagerec serve`` process
on 127.0.0.1 with a free port."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from ann_support import SAMPLE_DIR

FOLDERS = ("Leopards", "Motorbikes", "sunflower", "watch")
PER_FOLDER = 10


def copy_sample(root: Path, per_folder: int = PER_FOLDER) -> Path:
    """``per_folder`` real photos from each of FOLDERS under ``root``."""
    for folder in FOLDERS:
        (root / folder).mkdir(parents=True)
        for src in sorted((SAMPLE_DIR / folder).iterdir())[:per_folder]:
            shutil.copy(src, root / folder / src.name)
    return root


class Server:
    """A running ``imagerec serve``; ``client`` talks to it over real HTTP."""

    def __init__(self, config_path: Path, *extra: str, tmpdir: Path | None = None):
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **({"TMPDIR": str(tmpdir)} if tmpdir else {})}
        self.started = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "imagerec", "--config", str(config_path), "serve", "--port", "0", *extra],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        line = self.proc.stdout.readline()
        match = re.search(r"at (http://\S+/)", line)
        if not match:
            self.proc.kill()
            raise AssertionError(f"serve did not print its URL: {line!r} {self.proc.stderr.read()}")
        self.url = match.group(1)
        self.client = httpx.Client(base_url=self.url, timeout=60)
        self.wait_ready()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.client.get("/api/status").status_code == 200:
                    self.ready_s = time.perf_counter() - self.started
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise AssertionError("serve did not answer /api/status in time")

    def stop(self) -> str:
        self.client.close()
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err


MAX_UPLOAD_BYTES = 400_000
MAX_UPLOAD_IMAGES = 3
