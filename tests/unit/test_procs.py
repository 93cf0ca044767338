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
