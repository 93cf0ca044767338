"""Which embedding model a collection uses: its trained model file when there is one, else the
configured pretrained network (``model.arch`` with ``model.init: imagenet``), else none yet.

The pretrained model is rebuilt from the installed weights on each load; its model id is the hash
of spec and weights like any model file's, so the same install always gives the same id and
``index`` re-embeds only when the model really changes (a trained file appears, the input size changes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from imagerec.config import Config

__all__ = ["ModelChoice"]


@dataclass(frozen=True)
class ModelChoice:
    """The collection's model file path plus the configured network to use while it does not exist."""

    model_path: Path
    arch: str
    init: str
    input_size: int
    inference: str = "torch"  # CPU engine: "auto" / "onnx" (ONNX Runtime) or "torch"
    cache_dir: Path | None = None  # where exported ONNX graphs are kept
    embed_size: int | None = None  # a trained model file embeds at this size (None: its training size)

    @classmethod
    def from_config(cls, config: Config) -> "ModelChoice":
        m, layout = config.model, config.output.layout
        return cls(layout.model, m.arch, m.init, m.size, config.runtime.inference, layout.cache_dir, m.embed_size)

    @property
    def pretrained(self) -> bool:
        """True when no model file exists and the configured ImageNet network stands in."""
        return self.init == "imagenet" and not self.model_path.exists()

    @property
    def available(self) -> bool:
        """Whether any model is there to embed with."""
        return self.model_path.exists() or self.init == "imagenet"

    def describe(self) -> str:
        """What embeds images, in words (for notes and ``status``)."""
        if self.model_path.exists():
            at = f" at {self.embed_size} px" if self.embed_size else ""
            return f"the model file {self.model_path}{at}"
        if self.init == "imagenet":
            return f"the pretrained {self.arch} (ImageNet weights, {self.input_size} px)"
        return f"no model yet (model.init: random; 'train-embeddings' writes {self.model_path})"

    def load(self):
        """The ``EmbeddingModel`` to use, or None when there is none yet (``ModelFileError`` when broken)."""
        from imagerec.embed.files import load_model, pretrained_model

        if self.model_path.exists():
            return load_model(self.model_path, embed_size=self.embed_size)
        if self.init == "imagenet":
            return pretrained_model(self.arch, self.input_size)
        return None
