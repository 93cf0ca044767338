"""The embedding model: file format, loader, and batched inference.

File format (``embedding_model.pt``, written with ``torch.save``, read with ``weights_only=True``)::

    {
      "format": "imagerec.embedding_model", "format_version": 1,
      "spec": {"arch": "resnet18", "stem": "imagenet" | "small", "image_size": int,
               "embedding_dim": 512, "mean": [r, g, b], "std": [r, g, b]},
      "model_id": "<16 hex chars: sha256 of spec + weights>",
      "state_dict": {...backbone weights, no classifier...},
      "info": {...free-form provenance: created, trainer, epochs...},
    }

The backbone is a torchvision ResNet-18 with its classifier removed, so it outputs the 512-d pooled
features; embeddings are L2-normalised. ``stem="small"`` swaps the 7x7/stride-2 stem and max-pool for a
3x3/stride-1 convolution (the SimCLR CIFAR variant), which suits small inputs but costs ~16x more compute.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18

from imagerec.errors import ImagerecError, ModelFileError

MODEL_FORMAT = "imagerec.embedding_model"
FORMAT_VERSION = 1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild the network and feed it."""

    arch: Literal["resnet18"] = "resnet18"
    stem: Literal["imagenet", "small"] = "imagenet"
    image_size: int = 96
    embedding_dim: int = 512
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "ModelSpec":
        spec = cls(**{**raw, "mean": tuple(raw["mean"]), "std": tuple(raw["std"])})
        if spec.arch != "resnet18" or spec.stem not in ("imagenet", "small") or spec.embedding_dim != 512:
            raise ValueError(f"unsupported model spec {raw}")
        if not 16 <= spec.image_size <= 1024:
            raise ValueError(f"image_size {spec.image_size} out of range 16..1024")
        return spec


@dataclass
class EmbeddingModel:
    """A loaded backbone with its spec and id."""

    spec: ModelSpec
    model_id: str
    backbone: nn.Module
    info: dict[str, Any] = field(default_factory=dict)


def build_backbone(spec: ModelSpec) -> nn.Module:
    """A randomly initialised ResNet-18 backbone whose forward returns (N, 512) features."""
    net = resnet18(weights=None)
    if spec.stem == "small":
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net


def compute_model_id(spec: ModelSpec, state_dict: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256(json.dumps(asdict(spec), sort_keys=True).encode())
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def save_model(path: Path, backbone: nn.Module, spec: ModelSpec, info: dict[str, Any] | None = None) -> str:
    """Write a model file atomically (temp file, fsync, rename) and return its model id."""
    state_dict = {k: v.detach().cpu() for k, v in backbone.state_dict().items()}
    model_id = compute_model_id(spec, state_dict)
    payload = {
        "format": MODEL_FORMAT,
        "format_version": FORMAT_VERSION,
        "spec": asdict(spec),
        "model_id": model_id,
        "state_dict": state_dict,
        "info": {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), **(info or {})},
    }
    atomic_torch_save(payload, path)
    return model_id


def atomic_torch_save(payload: Any, path: Path) -> None:
    """``torch.save`` to a temp file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_random_model(path: Path, spec: ModelSpec = ModelSpec(), seed: int = 0) -> str:
    """Write a randomly initialised model file (for tests and benchmarks before training exists)."""
    torch.manual_seed(seed)
    return save_model(path, build_backbone(spec), spec, {"trainer": "random-init", "seed": seed})


def load_tagged_payload(path: Path, fmt: str, max_version: int, error: type[ImagerecError], what: str, hint: str) -> dict[str, Any]:
    """``torch.load`` (weights only) a dict this package wrote, checking its ``format`` tag and version.

    Every failure is an ``error`` naming ``path`` and ``what`` it should have been, ending with ``hint``.
    """
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise error(f"{path}: {what} not found; {hint}") from None
    except Exception as exc:
        raise error(f"{path}: corrupt or not a {what} ({type(exc).__name__}); {hint}") from None
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise error(f"{path}: not an imagerec {what}; {hint}")
    if payload.get("format_version", 0) > max_version:
        raise error(f"{path}: {what} format {payload['format_version']} is newer than this imagerec supports; upgrade imagerec")
    return payload


def load_model(path: Path) -> EmbeddingModel:
    """Load and verify a model file; raises ``ModelFileError`` with what to do on any problem."""
    path = Path(path)
    hint = "re-create it with 'train-embeddings'"
    payload = load_tagged_payload(path, MODEL_FORMAT, FORMAT_VERSION, ModelFileError, "model file", hint)
    try:
        spec = ModelSpec.from_dict(payload["spec"])
        backbone = build_backbone(spec)
        backbone.load_state_dict(payload["state_dict"], strict=True)
    except Exception as exc:
        raise ModelFileError(f"{path}: model weights do not match their spec ({exc}); {hint}") from None
    model_id = compute_model_id(spec, payload["state_dict"])
    if model_id != payload.get("model_id"):
        raise ModelFileError(f"{path}: model id check failed (file altered or damaged); {hint}")
    backbone.eval()
    return EmbeddingModel(spec, model_id, backbone, dict(payload.get("info", {})))


def select_device(preference: str = "auto") -> torch.device:
    """CUDA, then Apple MPS, then CPU for ``auto``; an explicit choice that is unavailable is an error."""
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if preference == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if (preference == "cuda" and not cuda) or (preference == "mps" and not mps):
        raise ModelFileError(f"runtime.device '{preference}' is not available on this machine; use 'auto' or 'cpu'")
    return torch.device(preference)


class Embedder:
    """Batched inference: uint8 NHWC images at the model's input size → L2-normalised float32 embeddings."""

    def __init__(self, model: EmbeddingModel, device: torch.device, threads: int | None = None):
        if device.type == "cpu":
            torch.set_num_threads(threads or os.cpu_count() or 1)
        self.model = model
        self.device = device
        self.image_size = model.spec.image_size
        self._net = model.backbone.to(device).eval().to(memory_format=torch.channels_last)
        self._mean = torch.tensor(model.spec.mean, device=device).view(1, 3, 1, 1) * 255.0
        self._std = torch.tensor(model.spec.std, device=device).view(1, 3, 1, 1) * 255.0

    @property
    def model_id(self) -> str:
        return self.model.model_id

    def embed(self, images: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 → (N, 512) float32, unit L2 norm."""
        if images.ndim != 4 or images.shape[1:] != (self.image_size, self.image_size, 3):
            raise ValueError(f"expected (N, {self.image_size}, {self.image_size}, 3) uint8, got {images.shape}")
        with torch.inference_mode():
            x = torch.from_numpy(images).to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
            x = ((x - self._mean) / self._std).contiguous(memory_format=torch.channels_last)
            if self.device.type == "cuda":
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    out = self._net(x)
            else:
                out = self._net(x)
            return F.normalize(out.float(), dim=1).cpu().numpy()
