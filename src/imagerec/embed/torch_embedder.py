"""Batched inference with a loaded model file: the ``Embedder`` that ``index`` and ``query`` use.

uint8 NHWC images at the model's input size → normalised by the spec's mean/std → channels-last
network under ``inference_mode`` (bf16 autocast on CUDA) → L2-normalised float32 rows.
Torch threads are not touched here: the stage that runs the embedder sets them
(``imagerec.embed.device.set_torch_threads``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from imagerec.embed.base import Embedder, Preprocess
from imagerec.embed.choice import ModelChoice
from imagerec.embed.device import select_device
from imagerec.embed.files import EmbeddingModel, load_model


CPU_CHUNK = 16  # images per forward pass on the CPU: activations stay cache- and allocator-friendly (measured)


class TorchEmbedder:
    """An ``Embedder`` over an ``EmbeddingModel`` on one torch device."""

    def __init__(self, model: EmbeddingModel, device: torch.device | str = "cpu"):
        self._model = model
        self._device = torch.device(device)
        self._preprocess = Preprocess(model.spec.image_size)
        self._net = model.backbone.to(self._device).eval().to(memory_format=torch.channels_last)
        self._mean = torch.tensor(model.spec.mean, device=self._device).view(1, 3, 1, 1) * 255.0
        self._std = torch.tensor(model.spec.std, device=self._device).view(1, 3, 1, 1) * 255.0

    @property
    def arch(self) -> str:
        return self._model.spec.arch

    @property
    def model_id(self) -> str:
        return self._model.model_id

    @property
    def dim(self) -> int:
        return self._model.spec.embedding_dim

    @property
    def input_size(self) -> int:
        return self._model.spec.image_size

    @property
    def preprocess(self) -> Preprocess:
        return self._preprocess

    @property
    def runs_on_cpu(self) -> bool:
        return self._device.type == "cpu"

    @property
    def init(self) -> str:
        return self._model.init

    @property
    def device(self) -> torch.device:
        """Where the network runs."""
        return self._device

    @property
    def model(self) -> EmbeddingModel:
        """The loaded model file (spec, id, backbone, info)."""
        return self._model

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 → (N, dim) float32, unit L2 norm."""
        self._preprocess.check(batch)
        if not batch.flags.writeable:  # torch.from_numpy wants a writable array (Preprocess output is read-only)
            batch = batch.copy()
        step = CPU_CHUNK if self.runs_on_cpu else len(batch)
        if len(batch) <= step:
            return self._embed(batch)
        return np.concatenate([self._embed(batch[i:i + step]) for i in range(0, len(batch), step)])

    def _embed(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self._device, non_blocking=True).permute(0, 3, 1, 2).float()
            x = ((x - self._mean) / self._std).contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self._device.type == "cuda"):
                out = self._net(x)
            return F.normalize(out.float(), dim=1).cpu().numpy()


def load_embedder(path: Path, *, device: torch.device | str = "auto") -> Embedder:
    """Load and verify the model file at ``path`` and make it ready on ``device`` ("auto": best available).

    Raises ``ModelFileError`` for a missing or damaged file or an unavailable device.
    """
    chosen = device if isinstance(device, torch.device) else select_device(device)
    return TorchEmbedder(load_model(Path(path)), chosen)


def load_chosen_embedder(choice: ModelChoice, *, device: torch.device | str = "auto", threads: int | None = None,
                         say=None) -> Embedder | None:
    """The embedder ``choice`` names (model file, else pretrained network) on ``device``; None when there is none yet.

    On the CPU with ``choice.inference`` "auto" or "onnx", ONNX Runtime runs it on ``threads`` threads
    (torch when that is unavailable or its output differs; ``say`` gets the note).
    """
    model = choice.load()
    if model is None:
        return None
    chosen = device if isinstance(device, torch.device) else select_device(device)
    if chosen.type == "cpu" and choice.inference != "torch" and choice.cache_dir is not None:
        from imagerec.embed.onnx_embedder import onnx_embedder

        return onnx_embedder(model, choice.cache_dir, threads or os.cpu_count() or 1, say)
    return TorchEmbedder(model, chosen)
