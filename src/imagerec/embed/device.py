"""Where torch runs: the device choice and the process-wide torch thread count.

``set_torch_threads`` is the one place that sets torch threads. Call it at a stage's edge (the start of
``index``, ``train-embeddings``, ``query``), never from a constructor or a loader: the setting is
process-wide, so a library object that changed it would slow every other user of torch in the process.
"""

from __future__ import annotations

import os

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
    return count
