"""Loading the ANN index safely, and its state for ``status``.

Loading reads and validates ``ann.json`` FIRST and refuses (``AnnIndexError``: "run 'build-ann'
again") a wrong kind, library, metric, model id or dimension, and any file whose size or checksum
differs, before the backend parses a byte. A file that is big (> ``FULL_HASH_MAX_BYTES``) and provably
untouched since the build (same inode, size and mtime) is checked with the sampled hash only, so a
1 GB index loads in ~1 s, not ~6 s; ``ann.verify: always`` forces the full hash. What ``auto``
guarantees: size, the first and last MiB and 256 evenly spaced 4 KiB blocks match the build, and every
stored vector is finite and unit-length (``AnnIndex.check_vectors``, a pass over the vectors), so a
truncation, a replaced file or damage to the vectors is refused; damage confined to the graph links
outside the sampled blocks is caught only by ``verify: always``. Loading changes no process-global state.
"""

from __future__ import annotations

import zipfile
from typing import Any

from imagerec.ann.base import REBUILD, AnnIndex, AnnIndexError, AnnSettings
from imagerec.ann.files import file_problem, legacy_present
from imagerec.ann.manifest import AnnMetadata, check_metadata, read_manifest
from imagerec.ann.registry import backend, kinds
from imagerec.ann.whitening import Whitening
from imagerec.config import Config
from imagerec.layout import Layout

UNREADABLE = f"unreadable metadata: {REBUILD}"
OLDER = f"built by an older imagerec: {REBUILD}"


def load_ann(config: Config, *, model_id: str | None, dim: int | None = None) -> AnnIndex:
    """Load ``config``'s index for ``model_id`` (None: any) and ``dim`` (None: any), verified."""
    return open_index(config.output.layout, AnnSettings.from_config(config), model_id=model_id, dim=dim)


def read_metadata(config: Config) -> AnnMetadata:
    """The validated manifest of ``config``'s index; ``AnnIndexError`` when absent or unreadable."""
    return read_manifest(config.output.layout)


def open_index(layout: Layout, settings: AnnSettings, *, model_id: str | None, dim: int | None = None) -> AnnIndex:
    """The index of ``layout``: manifest validated, every file verified, then read by its backend."""
    for attempt in (1, 2):
        meta = read_manifest(layout)
        chosen = settings.for_kind(meta.kind) if settings.kind == "auto" else settings  # auto: what build-ann chose
        if chosen.kind not in kinds():
            raise AnnIndexError(f"{layout.ann_manifest}: index is of kind {meta.kind!r}, which this imagerec cannot read; {REBUILD}")
        cls = backend(chosen.kind)
        check_metadata(meta, model_id=model_id, dim=dim, kind=cls.kind, library=cls.library, metric=cls.metric,
                       where=layout.ann_manifest)
        problem = _first_problem(layout, meta, settings.verify)
        if problem is None:
            index = cls(chosen).load([layout.ann_file(f.name) for f in meta.index_files], meta)
            damage = index.check_vectors()  # also what a sampled checksum can miss
            if damage is not None:
                raise AnnIndexError(f"{layout.ann_manifest}: ANN index is damaged ({damage}); {REBUILD}")
            return index
        name, detail = problem
        if attempt == 1 and detail == "is missing" and _manifest_changed(layout, meta):
            continue  # a build replaced the index between our reads: load the new one
        raise AnnIndexError(f"{layout.ann_file(name)}: ANN index file {detail}; {REBUILD}")
    raise AssertionError("unreachable")  # pragma: no cover


def read_whitening(layout: Layout, meta: AnnMetadata) -> Whitening | None:
    """The whitening fit of the index ``meta`` describes (None: built without one); its file was verified with the
    index's. A fit that does not match the manifest is an ``AnnIndexError``."""
    if meta.whitening is None:
        return None
    path = layout.ann_file(meta.whitening["file"])
    try:
        whitening = Whitening.read(path)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        detail = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise AnnIndexError(f"{path}: unreadable whitening fit ({detail}); {REBUILD}") from None
    if whitening.dim != meta.dim or whitening.dims != meta.whitening["dims"]:
        raise AnnIndexError(f"{path}: whitening fit ({whitening.dim} → {whitening.dims} dims) disagrees with the manifest; {REBUILD}")
    return whitening


def ann_state(layout: Layout, *, data_version: int, model_id: str | None) -> dict[str, Any] | None:
    """The index's state for ``status`` (None: no index). Cheap: sizes and sampled checksums only.
    ``whitening_dims``: the dimensions of its whitening fit (None: re-ranking on plain cosine).

    ``state`` is "current", "stale" (built from another data_version or model), "damaged: ...",
    "unreadable metadata: ..." or "built by an older imagerec: ...".
    """
    path = layout.ann_manifest
    if not path.exists():
        if legacy_present(layout):
            return {"kind": "hnsw", "path": str(path), "count": None, "state": OLDER}
        return None
    try:
        meta = read_manifest(layout)
    except AnnIndexError:
        return {"kind": None, "path": str(path), "count": None, "state": UNREADABLE}
    problem = _first_problem(layout, meta, "sampled")
    if problem is not None:
        state = f"damaged: {problem[0]} {problem[1]}: {REBUILD}"
    elif meta.data_version != data_version or meta.model_id != model_id:
        state = "stale"
    else:
        state = "current"
    whitening = meta.whitening["dims"] if meta.whitening else None
    return {"kind": meta.kind, "path": str(path), "count": meta.count, "state": state, "whitening_dims": whitening}


def _first_problem(layout: Layout, meta: AnnMetadata, mode: str) -> tuple[str, str] | None:
    """(file name, what is wrong) for the first file of ``meta`` that fails its check, else None."""
    for entry in meta.files:
        detail = file_problem(layout.ann_file(entry.name), entry, mode)
        if detail is not None:
            return entry.name, detail
    return None


def _manifest_changed(layout: Layout, meta: AnnMetadata) -> bool:
    try:
        return read_manifest(layout) != meta
    except AnnIndexError:
        return False
