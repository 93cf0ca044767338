"""A second ``index`` on the same output.dir exits at once naming the running one; readers never wait for it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import yaml

from ann_support import SAMPLE_DIR, run_cli


def _run_both(config, *commands) -> list[subprocess.CompletedProcess]:
    """Start every command at once, then wait for them all."""
    procs = [subprocess.Popen([sys.executable, "-m", "imagerec", "--config", str(config), *c],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands]
    outputs = [p.communicate(timeout=120) for p in procs]
    return [subprocess.CompletedProcess(p.args, p.returncode, *out) for p, out in zip(procs, outputs)]


def test_a_second_writer_exits_naming_the_first_and_readers_do_not_block(tmp_path):
    root = tmp_path / "photos"
    for copy in range(3):  # 900 files: the first run must still be going while the others start
        shutil.copytree(SAMPLE_DIR, root / f"copy{copy}")
    out = tmp_path / "out"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"data": {"image_root": str(root)}, "output": {"dir": str(out)},
                                      "index": {"workers": 1, "batch_size": 8}, "model": {"arch": "resnet18", "init": "random"}}))
    first = subprocess.Popen([sys.executable, "-m", "imagerec", "--config", str(config), "index", "-q"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lock = out / "index.lock"
        deadline = time.monotonic() + 60
        while not (lock.exists() and lock.read_text().strip() and (out / "images.db").exists()):
            assert first.poll() is None and time.monotonic() < deadline, "the first index never took the lock"
            time.sleep(0.05)
        assert lock.read_text().strip() == str(first.pid)
        reader_started = time.monotonic()
        second, status = _run_both(config, ["index", "-q"], ["status"])
        reader_s = time.monotonic() - reader_started
        still_running = first.poll() is None
    finally:
        stdout, stderr = first.communicate(timeout=300)
    assert second.returncode == 1 and "Traceback" not in second.stderr, second.stderr
    assert f"another index is running (pid {first.pid})" in second.stderr, second.stderr
    assert "indexed" not in second.stdout  # it did no work
    assert status.returncode == 0 and "images" in status.stdout, status.stderr
    assert still_running, "the first index ended before the reader ran: the test proved nothing"
    assert reader_s < 30
    assert first.returncode == 0, stderr
    assert "indexed 900 new" in stdout, stdout
    again = run_cli(config, "index", "-q")  # the lock was released
    assert again.returncode == 0 and "900 unchanged" in again.stdout, again.stdout + again.stderr
