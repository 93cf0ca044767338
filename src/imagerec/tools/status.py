"""The ``status`` report: what the collection holds, read from the store and the artefacts beside it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from imagerec.ann import ann_state
from imagerec.config import Config
from imagerec.data.features import HistogramSpec
from imagerec.errors import StoreError
from imagerec.store import Store


@dataclass(frozen=True)
class CollectionStatus:
    images: int
    skipped: int
    skipped_by_reason: dict[str, int]
    with_embedding: int
    model_id: str | None
    model_init: str | None  # "imagenet" (pretrained start) or "random"; None: not recorded
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
            model_init=store.model_init,
            embeddings_by_model=by_model,
            ann=ann_state(config.output.layout, data_version=store.data_version, model_id=model_id),
            db_path=str(config.output.layout.db),
            db_size_bytes=store.file_size(),
            schema_version=store.schema_version,
        )



def skipped_files(config: Config) -> list[tuple[bytes, str, str]]:
    """(path, reason, detail) of every file recorded as skipped, ordered by path."""
    with Store(config.output.layout.db, readonly=True) as store:
        return list(store.iter_skipped())


@dataclass(frozen=True)
class DoctorReport:
    """What ``doctor`` found: SQLite's integrity check and the rows whose BLOBs have the wrong size."""

    db_path: str
    integrity: str
    bad_histograms: list[int]
    bad_embeddings: list[int]
    repaired: bool

    @property
    def healthy(self) -> bool:
        return self.integrity == "ok" and not self.bad_histograms and not self.bad_embeddings

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "healthy": self.healthy}


def check_collection(config: Config, repair: bool = False) -> DoctorReport:
    """Check ``config``'s database; with ``repair``, drop rows with damaged BLOBs so the next index recomputes them."""
    spec = HistogramSpec(config.features.histogram.space, config.features.histogram.bins)
    db = config.output.layout.db
    with Store(db, readonly=not repair) as store:
        try:
            integrity = store.integrity_check()
        except StoreError as exc:  # damaged beyond what the check itself can read
            return DoctorReport(str(db), f"unreadable: {exc}", [], [], False)
        missing = store.missing_tables()
        if missing:
            return DoctorReport(str(db), f"missing tables: {', '.join(missing)}", [], [], False)
        hists, vectors = store.bad_blob_ids(spec.key, spec.size * 4)
        if repair and (hists or vectors):
            store.drop_rows(hists, vectors)
    return DoctorReport(str(db), integrity, hists, vectors, repair and bool(hists or vectors))
