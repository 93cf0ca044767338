"""Config profiles: typed, validated YAML.

Unknown keys, wrong types and out-of-range values are refused before any work starts, with a message
naming the file, the key and what is expected. Relative paths resolve against the config file's folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigError

#: Pillow format names that are decoded by default. Everything else is never handed to a decoder.
DEFAULT_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    image_root: Path = Field(description="Folder scanned for images.")


class OutputConfig(_Section):
    dir: Path = Field(description="Folder for images.db, embedding_model.pt, ann_hnsw.bin, cache/, checkpoints/.")

    @property
    def db_path(self) -> Path:
        return self.dir / "images.db"

    @property
    def model_path(self) -> Path:
        return self.dir / "embedding_model.pt"

    @property
    def ann_path(self) -> Path:
        return self.dir / "ann_hnsw.bin"

    @property
    def cache_dir(self) -> Path:
        return self.dir / "cache"

    @property
    def checkpoints_dir(self) -> Path:
        return self.dir / "checkpoints"


class RuntimeConfig(_Section):
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    threads: int | None = Field(default=None, ge=1, description="torch threads; default = CPU count.")


class IndexConfig(_Section):
    workers: int | None = Field(default=None, ge=1, description="Decode processes; default = CPU count.")
    batch_size: int = Field(default=64, ge=1, le=4096, description="Images per model batch and per transaction.")
    max_image_pixels: int = Field(default=178_956_970, ge=1, description="Larger images are refused as bombs.")
    formats: tuple[str, ...] = Field(default=DEFAULT_FORMATS, min_length=1)
    follow_symlinks: bool = False

    @field_validator("formats")
    @classmethod
    def _known_formats(cls, formats: tuple[str, ...]) -> tuple[str, ...]:
        from PIL import Image

        Image.init()
        known = set(Image.OPEN)
        unknown = [f for f in formats if f.upper() not in known]
        if unknown:
            raise ValueError(f"unknown Pillow format(s) {unknown}; known: {sorted(known)}")
        return tuple(f.upper() for f in formats)


class HistogramConfig(_Section):
    space: Literal["rgb", "hsv"] = "rgb"
    bins: int = Field(default=8, ge=2, le=32, description="Bins per channel (joint histogram has bins**3).")


class FeaturesConfig(_Section):
    histogram: HistogramConfig = HistogramConfig()


class Config(_Section):
    """A whole config profile. ``source`` is the file it was read from (None when built in code)."""

    data: DataConfig
    output: OutputConfig
    runtime: RuntimeConfig = RuntimeConfig()
    index: IndexConfig = IndexConfig()
    features: FeaturesConfig = FeaturesConfig()
    source: Path | None = Field(default=None, exclude=True)

    def with_overrides(self, overrides: dict[str, Any]) -> "Config":
        """Return a copy with dotted keys (``"index.workers"``) replaced; ``None`` values are ignored."""
        raw = self.model_dump(mode="python")
        for dotted, value in overrides.items():
            if value is None:
                continue
            node = raw
            *parents, leaf = dotted.split(".")
            for key in parents:
                node = node[key]
            node[leaf] = value
        raw["source"] = self.source
        return _validate(raw, self.source, where="command-line option")


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a YAML config profile."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})".replace("\n", " ")) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with sections 'data' and 'output' at the top level")
    base = path.resolve().parent
    for section, key in (("data", "image_root"), ("output", "dir")):
        value = raw.get(section, {}).get(key) if isinstance(raw.get(section), dict) else None
        if isinstance(value, str):
            raw[section][key] = base / os.path.expanduser(value)
    raw["source"] = path
    return _validate(raw, path, where=str(path))


def _validate(raw: dict[str, Any], source: Path | None, where: str) -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(_describe(err) for err in exc.errors())
        raise ConfigError(f"{where}: {problems}") from None


def _describe(err: Any) -> str:
    key = ".".join(str(part) for part in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"unknown key '{key}' (remove it or check its spelling)"
    if err["type"] == "missing":
        return f"missing key '{key}'"
    given = err.get("input")
    return f"key '{key}': {err['msg'].lower()} (got {given!r})"
