"""Which images belong together: labels from top-level folders or from a ``path,group`` CSV."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from imagerec.errors import EvaluationError
from imagerec.store.records import top_folder


@dataclass(frozen=True)
class Labels:
    """Group of each labelled image, keyed by its stored path (relative to ``data.image_root``, bytes)."""

    groups: dict[bytes, str]
    source: str  # "folders" or the labels file
    unmatched: int = 0  # labels-file rows naming no image of the collection


def folder_labels(paths: Sequence[bytes]) -> Labels:
    """Top-level folder of each path; files directly under the root get no label."""
    groups = {p: top_folder(p) for p in paths if b"/" in p}
    return Labels(groups, "folders")


def read_labels_file(path: str | os.PathLike, image_root: Path, known: set[bytes]) -> Labels:
    """A CSV of ``path,group`` rows (optional header ``path,group``); a row with only a path is labelled
    by its top-level folder, so a split list such as Caltech-101's test.txt works as is. Paths are
    relative to ``data.image_root`` (absolute ones under it are accepted)."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = [row for row in csv.reader(fh) if row and row[0].strip() and not row[0].startswith("#")]
    except FileNotFoundError:
        raise EvaluationError(f"{path}: labels file not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise EvaluationError(f"{path}: cannot read labels file ({exc})") from None
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["path", "group"]:
        rows = rows[1:]
    root = os.path.realpath(image_root)
    groups: dict[bytes, str] = {}
    unmatched = 0
    for line, row in enumerate(rows, 1):
        name = row[0].strip()
        if os.path.isabs(name):
            name = os.path.relpath(os.path.realpath(name), root)
        rel = os.fsencode(name.replace(os.sep, "/"))
        if len(row) > 2 or (len(row) == 2 and not row[1].strip()):
            raise EvaluationError(f"{path}: row {line}: expected 'path,group' or 'path' (got {row!r})")
        group = row[1].strip() if len(row) == 2 else top_folder(rel)
        if rel in known:
            groups[rel] = group
        else:
            unmatched += 1
    return Labels(groups, str(path), unmatched)
