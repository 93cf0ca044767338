"""Typed errors. The CLI maps each to a one-line message and an exit code; library code never exits."""

from __future__ import annotations


class ImagerecError(Exception):
    """Base class of every error imagerec raises on purpose."""

    exit_code = 1


class ConfigError(ImagerecError):
    """The config file is missing, unreadable or invalid."""

    exit_code = 2


class ModelFileError(ImagerecError):
    """An embedding model file is missing, corrupt or of an unknown format."""


class StoreError(ImagerecError):
    """The SQLite store cannot be opened or written (locked, newer schema, disk full...)."""


class ImageLoadError(ImagerecError):
    """One image could not be loaded; ``reason`` is a short machine-readable tag."""

    def __init__(self, reason: str, detail: str):
        super().__init__(reason, detail)  # both in args, so it pickles across worker processes
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


class Interrupted(ImagerecError):
    """The user interrupted a long run; finished work was committed."""

    exit_code = 130


class TrainError(ImagerecError):
    """Training cannot start or continue (too few images, incompatible checkpoint...)."""


class QueryError(ImagerecError):
    """A query cannot be answered as asked (missing or undecodable query image, unknown id, bad weights...)."""


class EvaluationError(ImagerecError):
    """The collection cannot be evaluated as asked (no labels, bad labels file, bad grid...)."""


class DiskFullError(ImagerecError):
    """A write ran out of space (or hit a file size limit); the previous file was kept."""

    def __init__(self, path, needed_bytes: int | None = None):
        needed = max(1, -(-int(needed_bytes) // 1_000_000)) if needed_bytes else None
        free = f"free {needed} MB" if needed else "free some space"
        super().__init__(f"disk full at {path}, nothing was lost; {free} and re-run")
        self.path = path
