"""Where torch runs: the device choice, the process-wide torch thread count, and the C allocator.

``set_torch_threads`` is the one place that sets torch threads. Call it at a stage's edge (the start of
``index``, ``train-embeddings``, ``query``), never from a constructor or a loader: the setting is
process-wide, so a library object that changed it would slow every other user of torch in the process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

import torch

from imagerec.errors import ModelFileError


def select_device(preference: str = "auto") -> torch.device:
    """CUDA, then Apple MPS, then CPU for ``auto``; an explicit choice that is unavailable is an error."""
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if preference == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if (preference == "cuda" and not cuda) or (preference == "mps" and not mps):
        raise ModelFileError(f"runtime.device '{preference}' is not available on this machine; use 'auto' or 'cpu'")
    return torch.device(preference)


def set_torch_threads(threads: int | None, device: torch.device | str | None = None) -> int:
    """Set torch's intra-op thread count to ``threads`` (None: the CPU count); returns the count in effect.

    With a ``device`` other than the CPU nothing changes: the model's work is not on CPU threads.
    """
    if device is not None and torch.device(device).type != "cpu":
        return torch.get_num_threads()
    count = threads or os.cpu_count() or 1
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    keep_large_allocations()
    return count


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
_allocator_tuned = False


def keep_large_allocations() -> None:
    """Let glibc reuse big freed blocks instead of mapping fresh pages for every activation tensor.

    A CNN's activations at 224 px are tens of MB per layer; by default glibc serves each with mmap and
    unmaps it on free, so every batch pays page faults and zeroing (60 % system time measured). Raising
    the mmap and trim thresholds keeps them in the heap: torch eager EfficientNet-Lite0 at 224 px on 2
    threads went from 31.5 to 68.5 images/s (``bench/bench_inference.py``). The retained heap is bounded
    by the largest batch's activations. No-op off glibc.
    """
    global _allocator_tuned
    if _allocator_tuned or not sys.platform.startswith("linux"):
        return
    _allocator_tuned = True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 256 << 20)
        libc.mallopt(_M_TRIM_THRESHOLD, 512 << 20)
    except (OSError, AttributeError):  # musl or another libc without mallopt
        pass
