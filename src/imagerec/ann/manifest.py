"""``output.dir/ann.json``: the manifest of the ANN index, naming every file of it (the commit point).

Written atomically after all index files are on disk; read and validated before any index byte is
parsed. Anything unexpected in it (not JSON, not an object, missing keys, wrong types, unsafe file
names, absurd nesting) is an ``AnnIndexError`` ending in "run 'build-ann' again", never a raw error.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any

from imagerec.ann.base import REBUILD, AnnIndexError
from imagerec.ann.files import AnnFile, legacy_present, safe_name
from imagerec.atomic import atomic_write
from imagerec.layout import Layout

FORMAT = "imagerec.ann"
FORMAT_VERSION = 2
_MAX_MANIFEST_BYTES = 1 << 20
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class AnnMetadata:
    """The whole index: what it was built from, with what, and each of its files."""

    kind: str
    model_id: str
    dim: int
    count: int
    max_image_id: int
    data_version: int
    params: dict[str, Any]
    built_at: float  # unix time taken BEFORE the database snapshot was read (conservative for staleness)
    built_at_iso: str
    build_seconds: float
    library: str
    library_version: str
    metric: str
    files: tuple[AnnFile, ...]
    whitening: dict[str, Any] | None = None  # {"file", "dims", "power", "rows"}: the re-ranking space (``whitening``)
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    @property
    def index_files(self) -> tuple[AnnFile, ...]:
        """The backend's files (all but the whitening fit)."""
        return tuple(f for f in self.files if f.name != self.whitening_file)

    @property
    def whitening_file(self) -> str | None:
        """Name of the file holding the whitening fit, or None when the index has none."""
        return self.whitening["file"] if self.whitening else None

    @property
    def size_bytes(self) -> int:
        """Total size of the index files."""
        return sum(f.size for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``files`` as a list of dicts)."""
        out = {"format": self.format, "format_version": self.format_version, **asdict(self)}
        out["files"] = [asdict(f) for f in self.files]
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, raw: Any) -> "AnnMetadata":
        """Validated metadata; ``ValueError`` saying what is wrong otherwise."""
        if not isinstance(raw, dict):
            raise ValueError(f"not a JSON object but {type(raw).__name__}")
        if raw.get("format") != FORMAT:
            raise ValueError(f"not an {FORMAT} manifest (format {str(raw.get('format'))[:40]!r})")
        version = raw.get("format_version")
        if not _is_int(version):
            raise ValueError(f"format_version {str(version)[:20]!r} is not an integer")
        if version != FORMAT_VERSION:
            newer = "a newer" if version > FORMAT_VERSION else "an older"
            raise ValueError(f"format_version {version} was written by {newer} imagerec (this one reads {FORMAT_VERSION})")
        values = _typed(raw, _FIELDS, "manifest")
        files = values["files"]
        if not files:
            raise ValueError("manifest names no files")
        values["files"] = tuple(_file_entry(entry) for entry in files)
        names = [f.name for f in values["files"]]
        if len(set(names)) != len(names):
            raise ValueError("manifest names a file twice")
        values["whitening"] = _whitening_entry(raw.get("whitening"), names)
        if values["dim"] <= 0 or values["count"] <= 0 or values["max_image_id"] < 0 or values["data_version"] < 0:
            raise ValueError(f"invalid dim/count/max_image_id/data_version ({values['dim']}, {values['count']}, "
                             f"{values['max_image_id']}, {values['data_version']})")
        return cls(**values)


_FIELDS: dict[str, type] = {
    "kind": str, "model_id": str, "dim": int, "count": int, "max_image_id": int, "data_version": int,
    "params": dict, "built_at": float, "built_at_iso": str, "build_seconds": float, "library": str,
    "library_version": str, "metric": str, "files": list, "format": str, "format_version": int,
}
_WHITENING_FIELDS: dict[str, type] = {"file": str, "dims": int, "power": float, "rows": int}
_FILE_FIELDS: dict[str, type] = {"name": str, "size": int, "sha256": str, "sample_sha256": str, "inode": int, "mtime_ns": int}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _typed(raw: dict, schema: dict[str, type], what: str) -> dict[str, Any]:
    """``raw``'s values for ``schema``'s keys, type-checked (bool is no int; an int is a valid float)."""
    missing = sorted(k for k in schema if k not in raw)
    if missing:
        raise ValueError(f"{what} lacks {', '.join(missing)}")
    out = {}
    for key, kind in schema.items():
        value = raw[key]
        if kind is float and _is_int(value):
            value = float(value)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise ValueError(f"{what} key {key!r} is {type(value).__name__}, expected {kind.__name__}")
        out[key] = value
    return out


def _file_entry(raw: Any) -> AnnFile:
    if not isinstance(raw, dict):
        raise ValueError(f"a files entry is {type(raw).__name__}, expected an object")
    values = _typed(raw, _FILE_FIELDS, "files entry")
    if not safe_name(values["name"]):
        raise ValueError(f"unsafe file name {values['name'][:60]!r} in manifest")
    if values["size"] < 0 or not _HEX64.match(values["sha256"]) or not _HEX64.match(values["sample_sha256"]):
        raise ValueError(f"invalid size or checksum for {values['name']}")
    return AnnFile(**values)


def _whitening_entry(raw: Any, names: list[str]) -> dict[str, Any] | None:
    """The manifest's whitening entry (absent or null in indexes built without one)."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValueError(f"whitening is {type(raw).__name__}, expected an object")
    values = _typed(raw, _WHITENING_FIELDS, "whitening entry")
    if values["file"] not in names or values["dims"] <= 0 or not 0 <= values["power"] <= 1:
        raise ValueError(f"invalid whitening entry (file {values['file'][:60]!r}, dims {values['dims']}, power {values['power']})")
    return values


def read_manifest(layout: Layout) -> AnnMetadata:
    """The validated manifest of ``layout``'s index; ``AnnIndexError`` when absent, legacy or unreadable."""
    path = layout.ann_manifest
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        if legacy_present(layout):
            raise AnnIndexError(f"{layout.root}: ANN index was built by an older imagerec; {REBUILD}") from None
        raise AnnIndexError(f"no ANN index yet at {path}; run 'build-ann' first") from None
    except OSError as exc:
        raise AnnIndexError(f"{path}: unreadable ANN metadata ({exc.strerror or exc}); {REBUILD}") from None
    try:
        if size > _MAX_MANIFEST_BYTES:
            raise ValueError(f"{size} bytes, too big for a manifest")
        return AnnMetadata.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except OSError as exc:
        raise AnnIndexError(f"{path}: unreadable ANN metadata ({exc.strerror or exc}); {REBUILD}") from None
    except RecursionError:
        raise AnnIndexError(f"{path}: unreadable ANN metadata (nested too deeply); {REBUILD}") from None
    except (ValueError, TypeError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise AnnIndexError(f"{path}: unreadable ANN metadata ({detail}); {REBUILD}") from None


def referenced_names(layout: Layout) -> set[str]:
    """Names of the files the current manifest uses (empty when there is no readable manifest)."""
    try:
        return {f.name for f in read_manifest(layout).files}
    except AnnIndexError:
        return set()


def write_manifest(layout: Layout, meta: AnnMetadata) -> None:
    """Replace ``ann.json`` atomically: the single commit point of a build."""
    with atomic_write(layout.ann_manifest, "w", encoding="utf-8") as fh:
        fh.write(meta.to_json())


def check_metadata(meta: AnnMetadata, *, model_id: str | None, dim: int | None, kind: str, library: str,
                   metric: str, where: object) -> None:
    """Refuse metadata that does not describe an index we can safely query for ``model_id``/``dim``."""
    if meta.kind != kind:
        raise AnnIndexError(f"{where}: index is of kind {meta.kind!r}, ann.kind is {kind!r}; {REBUILD}")
    if meta.library != library:
        raise AnnIndexError(f"{where}: index was built with {meta.library}, this imagerec reads {library}; {REBUILD}")
    if meta.metric != metric:
        raise AnnIndexError(f"{where}: index metric is {meta.metric}, expected {metric}; {REBUILD}")
    if model_id is not None and meta.model_id != model_id:
        raise AnnIndexError(f"{where}: index was built for model {meta.model_id}, the collection now uses {model_id}; {REBUILD}")
    if dim is not None and meta.dim != dim:
        raise AnnIndexError(f"{where}: index dimension is {meta.dim}, embeddings have {dim}; {REBUILD}")
