"""Where every artefact of a collection lives inside ``output.dir``; the only module that knows the names."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Layout:
    """Paths of one collection's files under ``root`` (= ``output.dir``)."""

    root: Path

    @property
    def db(self) -> Path:
        """The SQLite store: images, features, embeddings, skip records."""
        return self.root / "images.db"

    @property
    def model(self) -> Path:
        """The embedding model file written by ``train-embeddings``."""
        return self.root / "embedding_model.pt"

    @property
    def ann_manifest(self) -> Path:
        """The ANN index's metadata, naming every file of the index (the commit point of a build)."""
        return self.root / "ann.json"

    def ann_file(self, name: str) -> Path:
        """A file of the ANN index, as named in its manifest."""
        return self.root / name

    @property
    def cache_dir(self) -> Path:
        """Derived data that can always be rebuilt: the training cache, thumbnails, profiles."""
        return self.root / "cache"

    @property
    def thumbs_dir(self) -> Path:
        return self.cache_dir / "thumbs"

    def profile(self, mode: str) -> Path:
        return self.cache_dir / f"profile_{mode}.prof"

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / "checkpoints"

    @property
    def checkpoint(self) -> Path:
        """The training checkpoint ``train-embeddings --resume`` continues from."""
        return self.checkpoints_dir / "checkpoint.pt"

    @property
    def train_log(self) -> Path:
        """One JSON line per training epoch."""
        return self.root / "train_log.jsonl"
