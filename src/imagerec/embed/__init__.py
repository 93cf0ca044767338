"""Embedding models: the ``Embedder`` seam, the architecture registry, the model file, devices.

Typical use at a stage's edge::

    from imagerec.embed import ModelChoice, load_chosen_embedder, set_torch_threads
    embedder = load_chosen_embedder(ModelChoice.from_config(config), device=config.runtime.device,
                                    threads=config.runtime.threads)  # model file, else the pretrained network
    set_torch_threads(config.runtime.threads, embedder.device)
    vectors = embedder.embed(batch)

Names are imported lazily: decode workers import ``imagerec.embed.base`` without loading torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

_LAZY = {
    "Architecture": "base",
    "Embedder": "base",
    "ModelSpec": "base",
    "Preprocess": "base",
    "architecture": "base",
    "architectures": "base",
    "register_architecture": "base",
    "ModelChoice": "choice",
    "select_device": "device",
    "set_torch_threads": "device",
    "EmbeddingModel": "files",
    "load_model": "files",
    "save_model": "files",
    "write_random_model": "files",
    "TorchEmbedder": "torch_embedder",
    "load_embedder": "torch_embedder",
    "load_chosen_embedder": "torch_embedder",
    "pretrained_model": "files",
}

__all__ = sorted(_LAZY)

if TYPE_CHECKING:  # pragma: no cover
    from imagerec.embed.base import Architecture, Embedder, ModelSpec, Preprocess, architecture, architectures, register_architecture
    from imagerec.embed.choice import ModelChoice
    from imagerec.embed.device import select_device, set_torch_threads
    from imagerec.embed.files import EmbeddingModel, load_model, pretrained_model, save_model, write_random_model
    from imagerec.embed.torch_embedder import TorchEmbedder, load_chosen_embedder, load_embedder


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'imagerec.embed' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
