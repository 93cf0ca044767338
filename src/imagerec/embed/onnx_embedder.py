"""CPU inference with ONNX Runtime: the same network and outputs as ``TorchEmbedder``, about 1.9x faster
for EfficientNet-Lite0 at 224 px on 2 threads (docs/benchmarks.md).

The graph takes the uint8 (N, S, S, 3) batch as the decode workers make it and does the rest inside:
cast, NHWC → NCHW, the spec's mean/std, the backbone, L2 normalisation. It is exported once per model id
to ``output.dir/cache/onnx/<model_id>.onnx`` (temp file + rename) and checked against torch on a fixed
input every time it is loaded: a difference above ``TOLERANCE`` (or any failure to export or load)
means the torch embedder is used instead, with a note.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from imagerec.atomic import commit, held_temp
from imagerec.embed.base import Preprocess
from imagerec.embed.files import EmbeddingModel
from imagerec.embed.torch_embedder import TorchEmbedder

TOLERANCE = 1e-4  # largest difference from torch allowed on the check input (unit-length outputs)
CHECK_IMAGES = 2


class _Graph(nn.Module):
    """uint8 NHWC → unit-length embeddings: everything ``TorchEmbedder.embed`` does, as one module."""

    def __init__(self, model: EmbeddingModel):
        super().__init__()
        self.backbone = model.backbone
        self.register_buffer("mean", torch.tensor(model.spec.mean).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(model.spec.std).view(1, 3, 1, 1) * 255.0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.permute(0, 3, 1, 2).float() - self.mean) / self.std
        return F.normalize(self.backbone(x), dim=1)


class OnnxEmbedder:
    """An ``Embedder`` running an exported model with ONNX Runtime on the CPU."""

    def __init__(self, model: EmbeddingModel, session, input_name: str):
        self._model = model
        self._session = session
        self._input = input_name
        self._preprocess = Preprocess(model.spec.image_size)

    arch = property(lambda self: self._model.spec.arch)
    model_id = property(lambda self: self._model.model_id)
    dim = property(lambda self: self._model.spec.embedding_dim)
    input_size = property(lambda self: self._model.spec.image_size)
    preprocess = property(lambda self: self._preprocess)
    runs_on_cpu = property(lambda self: True)
    init = property(lambda self: self._model.init)
    device = property(lambda self: torch.device("cpu"))
    model = property(lambda self: self._model)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 → (N, dim) float32, unit L2 norm."""
        self._preprocess.check(batch)
        return self._session.run(None, {self._input: np.ascontiguousarray(batch, dtype=np.uint8)})[0]


def onnx_embedder(model: EmbeddingModel, cache_dir: Path, threads: int, say=None) -> OnnxEmbedder | TorchEmbedder:
    """The ONNX Runtime embedder for ``model`` (exported on first use), or a torch one when that fails."""
    path = Path(cache_dir) / "onnx" / f"{model.model_id}.onnx"
    try:
        ort = _import_onnxruntime(path.parent)
    except ImportError:
        return _fallback(model, "onnxruntime is not installed", say)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    # Idle ORT threads spin by default, taking cycles the decode workers need: off is ~5 % faster for index
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    for attempt in ("cached", "fresh"):
        try:
            if attempt == "fresh" or not path.exists():
                _export(model, path)
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            embedder = OnnxEmbedder(model, session, session.get_inputs()[0].name)
            difference = _difference(embedder, model)
            break
        except Exception as exc:  # a damaged cache file (then export again), a model the exporter cannot handle
            path.unlink(missing_ok=True)
            if attempt == "fresh":
                return _fallback(model, f"ONNX export or load failed ({type(exc).__name__})", say)
    if difference > TOLERANCE:
        return _fallback(model, f"ONNX output differs from torch by {difference:.1e}", say)
    return embedder


def _import_onnxruntime(folder: Path):
    """``onnxruntime`` with its telemetry off. Its telemetry SDK writes a session file (``.ses``) into
    TMPDIR when the module loads, so TMPDIR points at our own cache folder for that moment."""
    if "onnxruntime" not in sys.modules:
        folder.mkdir(parents=True, exist_ok=True)
        saved = os.environ.get("TMPDIR")
        os.environ["TMPDIR"] = str(folder)
        try:
            import onnxruntime
        finally:
            if saved is None:
                os.environ.pop("TMPDIR", None)
            else:
                os.environ["TMPDIR"] = saved
        onnxruntime.disable_telemetry_events()
    return sys.modules["onnxruntime"]


def _export(model: EmbeddingModel, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    size = model.spec.image_size
    example = torch.zeros(CHECK_IMAGES, size, size, 3, dtype=torch.uint8)
    with held_temp(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on shape inference are not the user's business
        torch.onnx.export(_Graph(model).eval(), (example,), str(tmp), input_names=["images"], output_names=["embeddings"],
                          dynamic_axes={"images": {0: "n"}, "embeddings": {0: "n"}}, dynamo=False)
        commit(tmp, path)


def _difference(embedder: OnnxEmbedder, model: EmbeddingModel) -> float:
    size = model.spec.image_size
    check = np.random.default_rng(0).integers(0, 256, (CHECK_IMAGES, size, size, 3), dtype=np.uint8)
    expected = TorchEmbedder(model).embed(check)
    return float(np.abs(embedder.embed(check) - expected).max())


def _fallback(model: EmbeddingModel, reason: str, say) -> TorchEmbedder:
    if say is not None:
        say(f"note: {reason}; embedding with torch instead")
    return TorchEmbedder(model)
