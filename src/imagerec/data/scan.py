"""Stream the files under an image root, one ``os.scandir`` at a time, never building a full list.

Hidden entries (``.DS_Store``, AppleDouble ``._*``, ``.git/``...), non-regular files (FIFOs, sockets,
devices) and symlinks (unless followed, with loop detection) are passed over. Which files are images
is decided by extension: known image formats outside the allow-list are yielded too, so the indexer
can record them as skipped with a reason; files with other extensions are only counted.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from imagerec.data.formats import register_plugins


@dataclass(frozen=True, slots=True)
class ScannedFile:
    """A regular file found by the scan. ``rel_path`` is relative to the root, '/'-separated, raw bytes."""

    rel_path: bytes
    size: int
    mtime_ns: int
    format_hint: str  # Pillow format implied by the extension, e.g. "JPEG"


@dataclass(slots=True)
class ScanStats:
    """What the scan passed over, counted (not recorded: these are not images)."""

    non_image_files: int = 0
    no_extension: int = 0  # not read: which files are images is decided by extension
    path_too_long: int = 0  # entries whose path exceeds PATH_MAX (they cannot be opened by path)
    hidden: int = 0
    special_files: int = 0
    symlinks: int = 0
    unreadable_dirs: list[str] = field(default_factory=list)


def image_extensions() -> dict[str, str]:
    """Map of lower-case extension ('.jpg') to the Pillow format that would open it.

    Formats Pillow can only write (PDF...) are not images to us; MPO files open through the JPEG decoder.
    """
    register_plugins()
    aliases = {"MPO": "JPEG"}
    extensions = {ext.lower(): aliases.get(fmt, fmt) for ext, fmt in Image.registered_extensions().items()}
    return {ext: fmt for ext, fmt in extensions.items() if fmt in Image.OPEN}


def format_hint(name: str | bytes | os.PathLike) -> str | None:
    """The Pillow format a file name's extension implies ('photo.JPG' → 'JPEG'), None for non-images."""
    return image_extensions().get(os.path.splitext(os.fsdecode(name))[1].lower())


def scan_images(root: Path, *, follow_symlinks: bool = False, stats: ScanStats | None = None) -> Iterator[ScannedFile]:
    """Yield every image-like regular file under ``root`` in a stable (sorted per folder) order."""
    stats = stats if stats is not None else ScanStats()
    extensions = image_extensions()
    root_bytes = os.fsencode(root)
    root_stat = os.stat(root_bytes)
    visited = {(root_stat.st_dev, root_stat.st_ino)}
    yield from _walk(root_bytes, b"", extensions, follow_symlinks, visited, stats)


def _walk(
    folder: bytes,
    rel_folder: bytes,
    extensions: dict[str, str],
    follow_symlinks: bool,
    visited: set[tuple[int, int]],
    stats: ScanStats,
) -> Iterator[ScannedFile]:
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            stats.path_too_long += 1
        else:
            stats.unreadable_dirs.append(f"{os.fsdecode(folder)} ({exc.strerror})")
        return
    subfolders: list[tuple[bytes, bytes]] = []
    for entry in entries:
        name = entry.name
        if name.startswith(b"."):
            stats.hidden += 1
            continue
        rel = rel_folder + name
        try:
            is_link = entry.is_symlink()
            if is_link and not follow_symlinks:
                stats.symlinks += 1
                continue
            st = entry.stat(follow_symlinks=True)
        except OSError as exc:  # dangling symlink, permission denied, vanished, path over PATH_MAX
            if exc.errno == errno.ENAMETOOLONG:
                stats.path_too_long += 1
            else:
                stats.special_files += 1
            continue
        if stat.S_ISDIR(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if key in visited:  # symlink loop or a folder reached twice
                stats.symlinks += 1
                continue
            visited.add(key)
            subfolders.append((entry.path, rel + b"/"))
        elif stat.S_ISREG(st.st_mode):
            ext = os.path.splitext(os.fsdecode(name))[1].lower()
            fmt = extensions.get(ext)
            if fmt is None and not ext:  # e.g. an export that dropped ".jpg": say so, the user may want it
                stats.no_extension += 1
            elif fmt is None:
                stats.non_image_files += 1
            else:
                yield ScannedFile(rel, st.st_size, st.st_mtime_ns, fmt)
        else:
            stats.special_files += 1
    del entries  # keep only one folder's listing alive while descending
    for path, rel in subfolders:
        yield from _walk(path, rel, extensions, follow_symlinks, visited, stats)


def count_image_files(root: Path, *, follow_symlinks: bool = False) -> int:
    """Count image-like files (a cheap pass for the progress bar's total)."""
    return sum(1 for _ in scan_images(root, follow_symlinks=follow_symlinks))
