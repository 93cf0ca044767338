"""Where every artefact of a collection lives inside ``output.dir``; the only module that knows the names."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Layout:
    """Paths of one collection's files under ``root`` (= ``output.dir``); build it with ``Layout.of``."""

    root: Path
    db: Path  # the SQLite store: images, features, embeddings, skip records
    model: Path  # the embedding model file written by train-embeddings
    ann_manifest: Path  # the ANN index's metadata naming every file of it (the commit point of a build)
    ann_lock: Path  # held while a build-ann runs
    index_lock: Path  # held while an index runs (the collection's single writer); readers never take it
    cache_dir: Path  # derived data that can always be rebuilt: training cache, thumbnails, profiles
    thumbs_dir: Path
    checkpoints_dir: Path
    checkpoint: Path  # what train-embeddings --resume continues from
    train_log: Path  # one JSON line per training epoch

    @classmethod
    def of(cls, root: Path) -> "Layout":
        root = Path(root)
        cache, checkpoints = root / "cache", root / "checkpoints"
        return cls(root=root, db=root / "images.db", model=root / "embedding_model.pt", ann_manifest=root / "ann.json",
                   ann_lock=root / "ann.lock", index_lock=root / "index.lock", cache_dir=cache, thumbs_dir=cache / "thumbs", checkpoints_dir=checkpoints,
                   checkpoint=checkpoints / "checkpoint.pt", train_log=root / "train_log.jsonl")

    def ann_file(self, name: str) -> Path:
        """A file of the ANN index, as named in its manifest."""
        return self.root / name

    def profile(self, mode: str) -> Path:
        """Where ``profile --mode MODE`` writes its cProfile data."""
        return self.cache_dir / f"profile_{mode}.prof"
