"""Where decode jobs run: the ``Executor`` protocol and its local process-pool implementation."""

from imagerec.indexing.executors.base import DECODER_CRASH, Executor
from imagerec.indexing.executors.local import LocalExecutor

__all__ = ["DECODER_CRASH", "Executor", "LocalExecutor"]
