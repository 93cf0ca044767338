"""``find_duplicates``: every group of duplicate images in an indexed collection, in one pass over the store.

1. Read the catalog (id, dHash, size, mtime, width, height: ~40 bytes per image) in pages (``catalog``).
2. Candidate pairs, never all pairs: dHash pairs within the hash radius by multi-index hashing
   (``hashpairs``), plus each image's nearest embedding neighbours (ANN index, or exact search for a
   small collection) for edits that move the dHash further (crops, rotations) and for the similar tier.
3. Score each candidate (Hamming, cosine; colour when there is no embedding) and keep the related pairs.
4. Connected components of the related pairs; in each, files that changed or vanished since ``index``
   are left out, byte identity is checked, and complete-link clustering makes the groups (``groups``).

Memory: the catalog, the candidate pairs and the vectors the ANN index already holds (or, without an
ANN index, the vectors of a collection up to ``vectors.EXACT_MAX`` images); nothing N×N.
Read-only: the user's files are only read (hashing identical candidates), never moved or deleted.
"""

from __future__ import annotations

import time
from dataclasses import asdict

import numpy as np

from imagerec.config import Config
from imagerec.dedup.assemble import Grouper
from imagerec.dedup.catalog import Catalog
from imagerec.dedup.groups import DuplicateSettings, relation_levels
from imagerec.dedup.hashpairs import hash_pairs
from imagerec.dedup.report import DuplicateReport
from imagerec.dedup.vectors import EXACT_MAX, Vectors
from imagerec.progress import ProgressCallback, report as report_progress
from imagerec.store import Store

#: With embeddings, dHash candidates are searched up to this radius (radius 4: ~3 s at 550k here, 6: 10 s, 8: 18 s):
#: pairs further apart in dHash but related are found as embedding neighbours (same quality, docs/benchmarks.md §11).
HASH_RADIUS_WITH_EMBEDDINGS = 4
def find_duplicates(config: Config, settings: DuplicateSettings | None = None, *,
                    progress: ProgressCallback | None = None) -> DuplicateReport:
    """Groups of duplicates in ``config``'s collection (read-only; see the module docstring)."""
    settings = settings or DuplicateSettings.from_config(config)
    timings, notices, started = {}, [], time.perf_counter()
    with Store(config.output.layout.db, readonly=True) as store:
        catalog = Catalog(store)
        timings["catalog_s"] = time.perf_counter() - started
        vectors = _vectors(config, store, len(catalog.ids), settings, notices)
        timings["vectors_s"] = time.perf_counter() - started - timings["catalog_s"]
        radius = _hash_radius(settings, vectors)
        a, b = _candidates(catalog, vectors, radius, settings, progress, timings)
        if vectors is not None and not vectors.complete:
            vectors = _store_vectors(store, np.unique(np.concatenate([a, b])))
        hamming, cosine, color, maybe_identical = catalog.evidence(vectors, a, b, with_color=settings.level >= 1)
        levels = relation_levels(settings, hamming, cosine, color, maybe_identical)  # bytes are compared per group
        keep = levels <= settings.level
        t0 = time.perf_counter()
        groups = Grouper(config.data.image_root, catalog, vectors, settings, notices).groups(a[keep], b[keep], progress)
        timings["grouping_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - started
    params = {**asdict(settings), "hash_radius": radius, "embeddings": vectors is not None}
    return DuplicateReport(groups, params, len(catalog.ids), notices, {k: round(v, 3) for k, v in timings.items()})


def _hash_radius(settings: DuplicateSettings, vectors: Vectors | None) -> int:
    """dHash search radius: 0 for the exact tier; capped when embedding neighbours find the further edits."""
    if settings.level == 0:
        return 0
    if vectors is None or not vectors.complete:
        return settings.max_bits
    return min(settings.max_bits, HASH_RADIUS_WITH_EMBEDDINGS)


def _vectors(config: Config, store: Store, n: int, settings: DuplicateSettings, notices: list[str]) -> Vectors | None:
    """The collection's embeddings: from a current ANN index, else the store (all, or later only those needed)."""
    model_id = store.model_id
    if model_id is None or settings.level == 0 or not store.count_embeddings_by_model().get(model_id):
        return None
    from imagerec.ann import AnnIndexError, load_ann
    from imagerec.ann.load import ann_state

    state = ann_state(config.output.layout, data_version=store.data_version, model_id=model_id)
    why = "no current ANN index; run 'build-ann'"
    if state is not None and state["state"] == "current":
        if state["kind"] != "hnsw":
            why = f"the {state['kind']} ANN index keeps no float vectors (an hnsw index does)"
        else:
            try:
                ann = load_ann(config, model_id=model_id)
                return Vectors(ann.labels(), ann.stored_vectors(), ann=ann)
            except AnnIndexError as exc:
                why = str(exc)
    if n <= EXACT_MAX:
        ids, rows = zip(*store.iter_embeddings(model_id, chunk_size=20_000)) if n else ((), ())
        return Vectors(np.concatenate(ids), np.concatenate(rows)) if ids else None
    notices.append(f"{n} images and {why}: only dHash pairs are examined (the similar tier and crop-like edits are not)")
    return Vectors(np.zeros(0, np.int64), np.zeros((0, 1), np.float32), complete=False)


def _store_vectors(store: Store, ids: np.ndarray) -> Vectors:
    """Embeddings of ``ids`` only, read from the store in chunks."""
    found, rows = [], []
    for start in range(0, len(ids), 900):
        chunk = ids[start:start + 900].tolist()
        got = store.get_features(chunk, store.model_id)
        found.append(got.ids)
        rows.append(got.embeddings)
    if not found:
        return Vectors(np.zeros(0, np.int64), np.zeros((0, 1), np.float32))
    return Vectors(np.concatenate(found), np.concatenate(rows))


def _candidates(catalog: Catalog, vectors: Vectors | None, radius: int, settings: DuplicateSettings,
                progress: ProgressCallback | None, timings: dict) -> tuple[np.ndarray, np.ndarray]:
    """Unique candidate pairs (a < b, as image ids) from dHash bands and embedding neighbours."""
    t0 = time.perf_counter()
    parts = [(catalog.ids[i], catalog.ids[j]) for i, j, _ in hash_pairs(catalog.dhash, radius)]
    timings["hash_pairs_s"] = time.perf_counter() - t0
    report_progress(progress, "duplicates: dHash pairs", 1, 2)
    if vectors is not None and settings.level >= 1:
        t1 = time.perf_counter()
        threshold = min(settings.near_similarity, settings.min_similarity if settings.level >= 2 else 1.0)
        parts += list(vectors.neighbour_pairs(settings.neighbours, threshold))
        timings["neighbours_s"] = time.perf_counter() - t1
    report_progress(progress, "duplicates: neighbours", 2, 2)
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    a, b = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    span = int(catalog.ids.max()) + 1 if len(catalog.ids) else 1
    key = np.unique(a.astype(np.int64) * span + b)
    return key // span, key % span
