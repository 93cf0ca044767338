"""Browse queries over the store (pages of images, folders) and the one way an id becomes a file path."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from imagerec.store import Store
from imagerec.store.records import absolute_path, display_path

MAX_ID = (1 << 63) - 1
TOP_LEVEL = "(top level)"


class NotFound(Exception):
    """An id that names no servable image: answered 404 with this message."""


def parse_id(raw: str) -> int:
    """A path segment as an image id; anything but a plain non-negative 64-bit integer is not found."""
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19 or int(raw) > MAX_ID:
        raise NotFound(f"no image with id {raw[:40]!r}")
    return int(raw)


@dataclass(frozen=True, slots=True)
class ImageFile:
    id: int
    relpath: str
    path: Path  # resolved, inside the image root


def image_file(store: Store, image_root: Path, image_id: int) -> ImageFile:
    """The file of image ``image_id``, re-checked to lie under ``image_root`` after resolving symlinks."""
    rows = store.get_images([image_id])
    if not rows:
        raise NotFound(f"no image with id {image_id} in the collection")
    root = Path(image_root).resolve()
    try:
        path = Path(os.fsdecode(absolute_path(root, rows[0].path))).resolve(strict=True)
    except (OSError, RuntimeError):
        raise NotFound(f"image {image_id}: its file is gone; run 'index' to update the collection") from None
    if not path.is_relative_to(root) or not path.is_file():
        raise NotFound(f"image {image_id}: its file is not under data.image_root")
    return ImageFile(image_id, display_path(rows[0].path), path)


def _folder_range(folder: str | None) -> tuple[str, list]:
    if folder is None or folder == "":
        return "", []
    if folder == TOP_LEVEL:
        return " WHERE instr(path, x'2f') = 0", []
    prefix = os.fsencode(folder).rstrip(b"/")
    # every path below prefix/ sorts in [prefix + '/', prefix + '0'): '0' follows '/' in ASCII
    return " WHERE path >= ? AND path < ?", [prefix + b"/", prefix + b"0"]


def page(store: Store, offset: int, limit: int, folder: str | None) -> tuple[int, list[tuple[int, str]]]:
    """(images in ``folder``, [(id, relpath)] of one page in path order)."""
    where, args = _folder_range(folder)
    with store.read_snapshot():
        total = store.read(f"SELECT COUNT(*) FROM images{where}", args)[0][0]
        rows = store.read(f"SELECT id, path FROM images{where} ORDER BY path LIMIT ? OFFSET ?", [*args, limit, offset])
        return total, [(int(i), display_path(p)) for i, p in rows]


def folders(store: Store) -> dict[str, int]:
    """Images per top-level folder (files directly under the root count as ``(top level)``)."""
    rows = store.read(
        "SELECT CASE WHEN instr(path, x'2f') = 0 THEN NULL ELSE substr(path, 1, instr(path, x'2f') - 1) END AS f, "
        "COUNT(*) FROM images GROUP BY f ORDER BY f")
    return {TOP_LEVEL if f is None else display_path(f): n for f, n in rows}
