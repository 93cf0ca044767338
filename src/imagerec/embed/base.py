"""The embedder seam: what ``index``, ``query`` and training need from any embedding model.

An embedder is chosen by the architecture name recorded in its model file (``spec.arch``) and looked
up in a registry, so a file written by one implementation is always loaded by the same one.
``preprocess`` runs in the decode worker processes (plain, picklable data); ``embed`` runs where the
model lives and returns unit-length float32 rows.

This module imports neither torch nor any architecture: decode workers import it for ``Preprocess``.
The built-in architectures register themselves when ``architecture()`` is first asked for one.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from imagerec.errors import ModelFileError

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BUILTIN_MODULES = ("imagerec.embed.resnet", "imagerec.embed.efficientnet")  # imported on the first registry look-up


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

    def check(self, batch: np.ndarray) -> None:
        """ValueError unless ``batch`` is a stack of this preprocessing's outputs, (N, S, S, 3)."""
        size = self.input_size
        if batch.ndim != 4 or batch.shape[1:] != (size, size, 3):
            raise ValueError(f"expected (N, {size}, {size}, 3) uint8, got {batch.shape}")


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

    @property
    def init(self) -> str: ...  # how the weights started: "imagenet" or "random" (picks default fusion weights)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 → (N, dim) float32 with unit L2 norm."""
        ...


# ---------------------------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild the network and feed it (recorded in the model file).

    ``arch`` names the registered architecture that builds the network; ``stem`` is a variant of it.
    """

    arch: str = "resnet18"
    stem: str = "imagenet"
    image_size: int = 96
    embedding_dim: int = 512
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "ModelSpec":
        """The spec of a model file's ``spec`` dict; ValueError/TypeError when malformed."""
        spec = cls(**{**raw, "mean": tuple(raw["mean"]), "std": tuple(raw["std"])})
        if not isinstance(spec.arch, str) or not isinstance(spec.stem, str) or len(spec.mean) != 3 or len(spec.std) != 3:
            raise ValueError(f"unsupported model spec {raw}")
        if not 16 <= spec.image_size <= 1024:
            raise ValueError(f"image_size {spec.image_size} out of range 16..1024")
        return spec


# ---------------------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Architecture:
    """A network family: builds a randomly initialised backbone ((N, 3, S, S) → (N, embedding_dim)).

    ``imagenet`` returns ImageNet weights for the backbone (None: random init only); ``mean``/``std``
    are the input normalisation those weights expect. ``stages`` splits a built backbone into its
    stages in input order (stem first), so that fine-tuning can keep the first ones fixed.
    """

    name: str
    embedding_dim: int
    builder: Callable[[ModelSpec], "nn.Module"]
    stems: tuple[str, ...] = ("imagenet",)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    imagenet: Callable[[], dict[str, Any]] | None = field(default=None, compare=False)
    stages: Callable[["nn.Module"], list["nn.Module"]] | None = field(default=None, compare=False)
    description: str = field(default="", compare=False)

    def spec(self, image_size: int, stem: str = "imagenet") -> ModelSpec:
        """The spec of this architecture at ``image_size`` with its normalisation."""
        return ModelSpec(arch=self.name, stem=stem, image_size=image_size,
                         embedding_dim=self.embedding_dim, mean=self.mean, std=self.std)

    def check(self, spec: ModelSpec) -> None:
        """ValueError unless ``spec`` is one this architecture can build."""
        if spec.arch != self.name or spec.stem not in self.stems or spec.embedding_dim != self.embedding_dim:
            raise ValueError(f"{self.name} builds stems {list(self.stems)} with embedding_dim {self.embedding_dim}, "
                             f"not arch {spec.arch!r} stem {spec.stem!r} embedding_dim {spec.embedding_dim}")

    def build(self, spec: ModelSpec) -> "nn.Module":
        """A randomly initialised backbone for ``spec`` (checked first)."""
        self.check(spec)
        return self.builder(spec)


_ARCHITECTURES: dict[str, Architecture] = {}
_builtins_loaded = False


def register_architecture(arch: Architecture) -> Architecture:
    """Add ``arch`` to the registry under ``arch.name`` (a different one under that name is an error)."""
    existing = _ARCHITECTURES.get(arch.name)
    if existing is not None and existing != arch:
        raise ValueError(f"architecture {arch.name!r} is already registered")
    _ARCHITECTURES[arch.name] = arch
    return arch


def architecture(name: str) -> Architecture:
    """The registered architecture ``name``; ModelFileError naming the known ones otherwise."""
    _load_builtins()
    try:
        return _ARCHITECTURES[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(_ARCHITECTURES)) or "none"
        raise ModelFileError(f"unknown model architecture {name!r} (known: {known})") from None


def architectures() -> list[str]:
    """Names of the registered architectures, sorted."""
    _load_builtins()
    return sorted(_ARCHITECTURES)


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        for module in BUILTIN_MODULES:
            importlib.import_module(module)
        _builtins_loaded = True
