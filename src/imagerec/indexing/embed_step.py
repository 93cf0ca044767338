"""The embed step: one model call per batch, on the decoded images that have a model input."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence

import numpy as np

from imagerec.embed.base import Embedder
from imagerec.indexing.decode import Decoded


class EmbedStep:
    """Embeds batches with ``embedder`` (None: no model, nothing to embed), timing into ``stage_s["embed"]``."""

    def __init__(self, embedder: Embedder | None, stage_s: Counter):
        self.embedder = embedder
        self.stage_s = stage_s

    def __call__(self, good: Sequence[Decoded]) -> np.ndarray | None:
        """(len(good), dim) unit float32 rows for ``good`` (decoded without error), or None without a model."""
        if self.embedder is None or not good:
            return None
        t0 = time.perf_counter()
        vectors = self.embedder.embed(np.stack([d.pixels for d in good]))
        self.stage_s["embed"] += time.perf_counter() - t0
        return vectors
