"""The embedding model file: format, id, writer and loader (plus the tagged-payload loader of checkpoints).

File format (``embedding_model.pt``, written with ``torch.save``, read with ``weights_only=True``)::

    {
      "format": "imagerec.embedding_model", "format_version": 1,
      "spec": {"arch": "resnet18", "stem": "imagenet" | "small", "image_size": int,
               "embedding_dim": 512, "mean": [r, g, b], "std": [r, g, b]},
      "model_id": "<16 hex chars: sha256 of spec + weights>",
      "state_dict": {...backbone weights, no classifier...},
      "info": {...free-form provenance: created, trainer, epochs...},
      "checksum": "<sha256 of every other entry, see content_checksum>",
    }

Compatibility: ``checksum`` was added without a format bump. A file that has one must match it; a
file without one (written before it existed) is still read, its weights and spec covered by the
model id check. Every field is type-checked before use (``ModelFileError``, never a ``TypeError``).

``spec.arch`` picks the registered architecture (``imagerec.embed.base.architecture``) that rebuilds
the network before the weights are loaded into it.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from imagerec.atomic import write_bytes_atomic
from imagerec.embed.base import IMAGENET_MEAN, IMAGENET_STD, ModelSpec, architecture
from imagerec.errors import ImagerecError, ModelFileError
from imagerec.procs import deferred_sigint

__all__ = [
    "FORMAT_VERSION", "IMAGENET_MEAN", "IMAGENET_STD", "MODEL_FORMAT", "EmbeddingModel", "ModelSpec",
    "atomic_torch_save", "build_backbone", "check_checksum", "compute_model_id", "content_checksum", "load_model",
    "load_tagged_payload", "pretrained_backbone", "pretrained_model",
    "save_model", "write_random_model",
]

MODEL_FORMAT = "imagerec.embedding_model"
FORMAT_VERSION = 1
_HINT = "re-create it with 'train-embeddings'"


@dataclass
class EmbeddingModel:
    """A loaded backbone with its spec and id."""

    spec: ModelSpec
    model_id: str
    backbone: nn.Module
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def init(self) -> str:
        """How the weights started: "imagenet" or "random" (files from before ``info.init`` were all from scratch)."""
        return str(self.info.get("init", "random"))


def build_backbone(spec: ModelSpec) -> nn.Module:
    """A randomly initialised backbone for ``spec``, built by the architecture ``spec.arch`` names."""
    return architecture(spec.arch).build(spec)


def compute_model_id(spec: ModelSpec, state_dict: dict[str, torch.Tensor]) -> str:
    """16 hex chars of sha256 over the spec (sorted JSON) and every weight's name and bytes, by name."""
    digest = hashlib.sha256(json.dumps(asdict(spec), sort_keys=True).encode())
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def save_model(path: Path, backbone: nn.Module, spec: ModelSpec, info: dict[str, Any] | None = None) -> str:
    """Write a model file atomically (temp file, fsync, rename) and return its model id."""
    architecture(spec.arch).check(spec)
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
    """``torch.save`` so that ``path`` holds either its old content or all of ``payload``, never a mix.

    A dict payload gets a ``checksum`` entry. Serialised in memory first, so the file's space is
    reserved before any byte is written (``DiskFullError``); Ctrl-C during the save waits for its end.
    """
    if isinstance(payload, dict):
        payload = {**payload, "checksum": content_checksum(payload)}
    with deferred_sigint():
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        write_bytes_atomic(Path(path), buffer.getbuffer())


def content_checksum(value: Any) -> str:
    """sha256 over a payload's entries (a ``checksum`` entry excluded): types, keys, tensor bytes, scalars."""
    digest = hashlib.sha256()
    _feed(digest, {k: v for k, v in value.items() if k != "checksum"} if isinstance(value, dict) else value)
    return digest.hexdigest()


def _feed(digest: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"T{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        digest.update(f"D{len(value)}".encode())
        for key in sorted(value, key=lambda k: (type(k).__name__, repr(k))):
            _feed(digest, key)
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"L{len(value)}".encode())
        for item in value:
            _feed(digest, item)
    else:
        digest.update(f"{type(value).__name__}:{value!r};".encode())


def check_checksum(payload: dict[str, Any], error: Callable[[str], ImagerecError]) -> None:
    """Raise ``error(reason)`` when ``payload`` has a checksum that does not match its content."""
    if "checksum" not in payload:
        return  # written before checksums existed: see the module docstring
    if not isinstance(payload["checksum"], str) or payload["checksum"] != content_checksum(payload):
        raise error("checksum mismatch (file altered or damaged)")


def write_random_model(path: Path, spec: ModelSpec = ModelSpec(), seed: int = 0) -> str:
    """Write a randomly initialised model file (for tests and benchmarks before training exists)."""
    torch.manual_seed(seed)
    return save_model(path, build_backbone(spec), spec, {"trainer": "random-init", "seed": seed})


def pretrained_backbone(spec: ModelSpec) -> nn.Module:
    """A backbone for ``spec`` with its architecture's ImageNet weights (``ModelFileError`` when it has none)."""
    arch = architecture(spec.arch)
    if arch.imagenet is None:
        raise ModelFileError(f"{spec.arch} has no pretrained weights; set model.init: random and run 'train-embeddings'")
    backbone = arch.build(spec)
    try:
        backbone.load_state_dict(arch.imagenet(), strict=True)
    except RuntimeError as exc:
        raise ModelFileError(f"the installed {spec.arch} ImageNet weights do not fit the network ({exc})") from None
    return backbone


def pretrained_model(arch: str, input_size: int) -> EmbeddingModel:
    """The ImageNet-pretrained ``arch`` at ``input_size`` as an ``EmbeddingModel`` (nothing written to disk)."""
    spec = architecture(arch).spec(input_size)
    backbone = pretrained_backbone(spec).eval()
    state_dict = {k: v.detach() for k, v in backbone.state_dict().items()}
    return EmbeddingModel(spec, compute_model_id(spec, state_dict), backbone, {"trainer": "pretrained", "init": "imagenet"})


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
    version = payload.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise error(f"{path}: {what} has an invalid format_version {version!r}; {hint}")
    if version > max_version:
        raise error(f"{path}: {what} format {payload['format_version']} is newer than this imagerec supports; upgrade imagerec")
    return payload


def load_model(path: Path, embed_size: int | None = None) -> EmbeddingModel:
    """Load and verify a model file; raises ``ModelFileError`` with what to do on any problem.

    ``embed_size`` feeds the network inputs of that size instead of the size it was trained at: the
    weights are the file's, the spec (and so the model id) says the new size.
    """
    path = Path(path)
    payload = load_tagged_payload(path, MODEL_FORMAT, FORMAT_VERSION, ModelFileError, "model file", _HINT)
    _check_model_fields(path, payload)
    try:
        spec = ModelSpec.from_dict(payload["spec"])
        embed_spec = replace(spec, image_size=embed_size) if embed_size else spec
        backbone = architecture(spec.arch).build(embed_spec)
        backbone.load_state_dict(payload["state_dict"], strict=True)
    except ModelFileError as exc:  # an architecture this imagerec does not know
        raise ModelFileError(f"{path}: {exc}; {_HINT}") from None
    except Exception as exc:
        raise ModelFileError(f"{path}: model weights do not match their spec ({exc}); {_HINT}") from None
    model_id = compute_model_id(spec, payload["state_dict"])
    if model_id != payload.get("model_id"):
        raise ModelFileError(f"{path}: model id check failed (file altered or damaged); {_HINT}")
    check_checksum(payload, lambda reason: ModelFileError(f"{path}: {reason}; {_HINT}"))
    backbone.eval()
    if embed_spec != spec:  # another input size: another model as far as the stored embeddings go
        model_id = compute_model_id(embed_spec, payload["state_dict"])
    return EmbeddingModel(embed_spec, model_id, backbone, dict(payload.get("info", {})))


_MODEL_FIELDS = {"spec": dict, "state_dict": dict, "model_id": str, "info": dict}


def _check_model_fields(path: Path, payload: dict[str, Any]) -> None:
    """Every entry of the expected type (``info`` may be absent), so nothing below meets a TypeError."""
    for key, kind in _MODEL_FIELDS.items():
        if key == "info" and key not in payload:
            continue
        if not isinstance(payload.get(key), kind):
            got = "missing" if key not in payload else f"a {type(payload[key]).__name__}"
            raise ModelFileError(f"{path}: '{key}' should be a {kind.__name__}, is {got}; {_HINT}")
    bad = [k for k, v in payload["state_dict"].items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelFileError(f"{path}: state_dict entry {bad[0]!r} is not a named tensor; {_HINT}")
