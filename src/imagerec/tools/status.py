"""The ``status`` report: what the collection holds, read from the store and the artefacts beside it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from imagerec.ann import ann_state
from imagerec.config import Config
from imagerec.store import Store


@dataclass(frozen=True)
class CollectionStatus:
    images: int
    skipped: int
    skipped_by_reason: dict[str, int]
    with_embedding: int
    model_id: str | None
    embeddings_by_model: dict[str, int]
    ann: dict[str, Any] | None
    db_path: str
    db_size_bytes: int
    schema_version: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def collection_status(config: Config) -> CollectionStatus:
    """Read-only summary of ``config``'s collection."""
    with Store(config.output.layout.db, readonly=True) as store:
        by_model = store.count_embeddings_by_model()
        model_id = store.model_id
        skipped = store.count_skipped_by_reason()
        return CollectionStatus(
            images=store.count_images(),
            skipped=sum(skipped.values()),
            skipped_by_reason=skipped,
            with_embedding=by_model.get(model_id, 0) if model_id else 0,
            model_id=model_id,
            embeddings_by_model=by_model,
            ann=ann_state(config.output.layout, data_version=store.data_version, model_id=model_id),
            db_path=str(config.output.layout.db),
            db_size_bytes=store.file_size(),
            schema_version=store.schema_version,
        )

