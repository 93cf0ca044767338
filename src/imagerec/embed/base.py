"""The embedder seam: what ``index``, ``query`` and training need from any embedding model.

An embedder is chosen by the architecture name recorded in its model file (``spec.arch``) and looked
up in a registry, so a file written by one implementation is always loaded by the same one.
``preprocess`` runs in the decode worker processes (plain, picklable data); ``embed`` runs where the
model lives and returns unit-length float32 rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image


@dataclass(frozen=True, slots=True)
class Preprocess:
    """Image → model input: the shorter side resized to ``input_size``, centre crop, (S, S, 3) uint8."""

    input_size: int

    @property
    def min_side(self) -> int:
        """Smallest side the decoder must deliver for this input (JPEG DCT scaling stops there)."""
        return self.input_size

    def __call__(self, image: Image.Image) -> np.ndarray:
        size = self.input_size
        w, h = image.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        # one resize of the centre square (box=), instead of resizing everything and then cropping
        square = image.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side),
                              reducing_gap=3.0)
        return np.asarray(square, dtype=np.uint8)


@runtime_checkable
class Embedder(Protocol):
    """A loaded embedding model, ready for batches of ``preprocess`` outputs."""

    @property
    def arch(self) -> str: ...  # registry key, e.g. "resnet18"

    @property
    def model_id(self) -> str: ...  # changes whenever the weights or the spec change

    @property
    def dim(self) -> int: ...

    @property
    def input_size(self) -> int: ...

    @property
    def preprocess(self) -> Preprocess: ...

    @property
    def runs_on_cpu(self) -> bool: ...  # decode workers then yield the CPU to the model

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 → (N, dim) float32 with unit L2 norm."""
        ...
