"""A short run of the loader fuzzer (bench/fuzz_loader.py): mutated real files give an image or an
ImageLoadError, never another exception, and none takes over 2 s. Run it longer with --inputs 20000."""

from __future__ import annotations

import json
import subprocess
import sys

from ann_support import REPO


def test_mutated_inputs_only_ever_raise_image_load_errors(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "bench" / "fuzz_loader.py"), "--inputs", "6000", "--seed", "13",
                           "--slow-s", "2", "--out", str(tmp_path)], capture_output=True, text=True, timeout=240)
    assert done.returncode in (0, 1), done.stderr[-2000:]  # not killed by a signal (a decoder crash)
    report = json.loads(done.stdout)
    assert report["findings"] == [], report["findings"][:5]
    assert done.returncode == 0
    assert sum(report["outcomes"].values()) == 6000 and report["seed_files"] >= 100
    assert {"ok", "corrupt", "truncated", "unidentified"} <= set(report["outcomes"])  # the mutations reach the decoders
    assert report["slowest_s"] < 2
