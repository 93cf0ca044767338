"""procs: a Ctrl-C during a deferred block is honoured only after it; children start with SIGINT blocked."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from imagerec.procs import deferred_sigint, sigint_blocked_for_children


def test_ctrl_c_inside_a_deferred_block_waits_for_its_end():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    finished = False
    try:
        with pytest.raises(KeyboardInterrupt):
            with deferred_sigint():
                os.kill(os.getpid(), signal.SIGINT)
                for _ in range(1000):  # the handler runs between bytecodes: give it every chance
                    pass
                finished = True
    finally:
        signal.signal(signal.SIGINT, previous)
    assert finished


def test_children_created_in_the_block_start_with_sigint_blocked():
    probe = "print(open('/proc/self/status').read().split('SigBlk:')[1].split()[0])"
    with sigint_blocked_for_children():
        blocked = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout
    after = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout
    assert int(blocked, 16) & (1 << (signal.SIGINT - 1))
    assert not int(after, 16) & (1 << (signal.SIGINT - 1))


# A Ctrl-C that lands inside an ``exec`` of source text (an import creating a dataclass) and is caught
# further up: CPython still marks it unhandled, and ``python -m`` then ends the process by SIGINT.
_CAUGHT_IN_EXEC = "try:\n    exec('raise KeyboardInterrupt')\nexcept KeyboardInterrupt:\n    pass\n"


@pytest.mark.parametrize("imports,then,status", [
    ("import sys", "sys.exit(130)", -signal.SIGINT),  # how ``python -m imagerec`` could end before the reset
    ("import sys; from imagerec.procs import exit_status_kept", "exit_status_kept(); sys.exit(130)", 130),
    ("import sys; from imagerec.cli import main", "sys.argv = ['imagerec', '--help']; main()", 0),
], ids=["without-reset", "reset", "cli-entry-point"])
def test_a_handled_ctrl_c_keeps_the_exit_status(tmp_path, imports, then, status):
    (tmp_path / "probe.py").write_text(f"{imports}\n{_CAUGHT_IN_EXEC}{then}\n")  # imports first: they exec too
    done = subprocess.run([sys.executable, "-m", "probe"], cwd=tmp_path, capture_output=True, timeout=120)
    assert done.returncode == status, done.stderr[-500:]
