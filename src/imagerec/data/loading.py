"""Safe image loading: one file in, an RGB Pillow image out, or an ``ImageLoadError`` with a reason.

Only formats on the allow-list reach a decoder; the pixel limit is enforced before decoding
(Pillow's ``DecompressionBombWarning`` is an error here); truncated files are refused rather than
padded (``ImageFile.LOAD_TRUNCATED_IMAGES`` is never set); JPEGs are decoded in the DCT domain at
the smallest scale that still covers ``min_side``, PNG and WebP by libvips at a reduced size where
``pyvips`` is installed (``fastdecode``), other formats box-reduced right after decoding; EXIF
orientation is applied; transparency is composited on white and 16-bit data is scaled, not clipped.
A file up to ``MAX_READ_BYTES`` is read in one go and decoded from memory.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from imagerec.data import fastdecode
from imagerec.data.formats import decoder_versions, register_plugins
from imagerec.errors import ImageLoadError

if TYPE_CHECKING:
    from imagerec.config import IndexConfig

# Skip reasons recorded in the store (stable strings: they are data).
EMPTY_FILE = "empty_file"
UNREADABLE = "unreadable"
VANISHED = "vanished"
NOT_REGULAR = "not_regular_file"
FORMAT_NOT_ALLOWED = "format_not_allowed"
UNIDENTIFIED = "unidentified"
DECOMPRESSION_BOMB = "decompression_bomb"
TRUNCATED = "truncated"
CORRUPT = "corrupt"
PATH_TOO_LONG = "path_too_long"

#: Larger files are decoded from the file (Pillow) instead of being read into memory first.
MAX_READ_BYTES = 64 * 2**20
_ORIENTATIONS = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
                 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                 8: Image.Transpose.ROTATE_90}  # EXIF orientation -> the transpose that displays it (as exif_transpose)


@dataclass(frozen=True, slots=True)
class LoadSettings:
    """How to load: the decoder allow-list, the pixel limit and the smallest side the features need."""

    formats: tuple[str, ...]
    max_pixels: int
    min_side: int
    follow_symlinks: bool = True  # False: a path that is a symlink when opened is refused (O_NOFOLLOW)
    decoder: str = "auto"  # auto: libvips for PNG/WebP when pyvips is installed; pillow: Pillow only

    @classmethod
    def from_config(cls, index: "IndexConfig", min_side: int) -> "LoadSettings":
        """The allow-list, pixel limit, symlink rule and decoder of ``config.index``, decoding to at least ``min_side``."""
        return cls(index.formats, index.max_image_pixels, min_side, index.follow_symlinks, index.decoder)

    @property
    def skip_key(self) -> str:
        """What a skip decision depended on: a file skipped under another key is tried again."""
        return (f"formats={','.join(sorted(self.formats))};max_pixels={self.max_pixels};"
                f"symlinks={int(self.follow_symlinks)};decoders={decoder_versions()};decoder={self.decoder}")


@dataclass(slots=True)
class LoadedImage:
    image: Image.Image  # RGB, possibly reduced (never below min_side); orientation applied
    width: int  # original size, after EXIF orientation
    height: int
    format: str


def load_image(path: str | bytes | os.PathLike, settings: LoadSettings, format_hint: str | None = None) -> LoadedImage:
    """Open, verify and decode one image. Raises ``ImageLoadError`` with a reason tag on any failure."""
    if format_hint is not None and format_hint not in settings.formats:
        raise ImageLoadError(FORMAT_NOT_ALLOWED, f"{format_hint} is not in index.formats {list(settings.formats)}")
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if not settings.follow_symlinks:  # the file may have been replaced by a symlink since the scan
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise ImageLoadError(VANISHED, "file disappeared before it could be read") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP and not settings.follow_symlinks:
            raise ImageLoadError(NOT_REGULAR, "is a symlink (index.follow_symlinks is false)") from None
        if exc.errno == errno.ENAMETOOLONG:
            raise ImageLoadError(PATH_TOO_LONG, "path longer than the system allows (PATH_MAX)") from None
        raise ImageLoadError(UNREADABLE, exc.strerror or str(exc)) from None
    try:  # checked before fdopen, which raises IsADirectoryError for a folder
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ImageLoadError(NOT_REGULAR, "not a regular file")
        if st.st_size == 0:
            raise ImageLoadError(EMPTY_FILE, "file is empty")
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as fp:
        data = _read_whole(fp, st.st_size)
        return _decode(fp if data is None else io.BytesIO(data), settings, data)


def _read_whole(fp, size: int) -> bytes | None:
    """The file's bytes in one read (Pillow alone issues dozens of small reads per file); None above the cap."""
    if size > MAX_READ_BYTES:
        return None
    data = fp.read(MAX_READ_BYTES + 1)
    if len(data) > MAX_READ_BYTES:  # grew since fstat
        fp.seek(0)
        return None
    return data


def _decode(fp, settings: LoadSettings, data: bytes | None = None) -> LoadedImage:
    register_plugins()  # every plugin, so the allow-list names resolve (idempotent)
    with _PILLOW_LIMIT.applied(settings.max_pixels):
        return _decode_with_limit(fp, settings, data)


class _PillowPixelLimit:
    """Pillow reads its bomb limit only from the global ``Image.MAX_IMAGE_PIXELS``, during open and load.

    Decodes with the same limit share one setting; a decode with another limit waits until they have
    finished, so no thread ever decodes under another call's limit, and the global is restored when
    the last decode ends.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active = 0
        self._limit: int | None = None
        self._saved: int | None = None

    @contextmanager
    def applied(self, limit: int) -> Iterator[None]:
        with self._cond:
            while self._active and self._limit != limit:
                self._cond.wait()
            if not self._active:
                self._saved, self._limit = Image.MAX_IMAGE_PIXELS, limit
                Image.MAX_IMAGE_PIXELS = limit
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                if not self._active:
                    Image.MAX_IMAGE_PIXELS, self._limit = self._saved, None
                    self._cond.notify_all()


_PILLOW_LIMIT = _PillowPixelLimit()


def _decode_with_limit(fp, settings: LoadSettings, data: bytes | None) -> LoadedImage:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "Corrupt EXIF data": the image itself may be fine
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(fp, formats=[f for f in settings.formats if f in Image.OPEN])  # an absent plugin: no match
        except UnidentifiedImageError:
            raise ImageLoadError(UNIDENTIFIED, f"not an image of an allowed format {list(settings.formats)}") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageLoadError(DECOMPRESSION_BOMB, _bomb_message(settings.max_pixels)) from None
        except Exception as exc:  # header parsers raise many types on hostile input
            raise ImageLoadError(_failure_reason(exc), _describe(exc)) from None
        try:  # no "with img": the returned image may be img itself, and closing it frees its pixels
            fmt = img.format or "?"
            if img.width * img.height > settings.max_pixels:  # formats that skip Pillow's own check
                raise ImageLoadError(DECOMPRESSION_BOMB, f"{img.width}x{img.height} pixels: {_bomb_message(settings.max_pixels)}")
            full_size = img.size
            rgb, orientation = _pixels(img, settings, data)
            turned = orientation in (5, 6, 7, 8)
            width, height = (full_size[1], full_size[0]) if turned else full_size
        except ImageLoadError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageLoadError(DECOMPRESSION_BOMB, _bomb_message(settings.max_pixels)) from None
        except MemoryError:
            raise ImageLoadError(DECOMPRESSION_BOMB, "not enough memory to decode") from None
        except OSError as exc:
            raise ImageLoadError(_failure_reason(exc), _describe(exc)) from None
        except Exception as exc:  # decoders raise ValueError, SyntaxError, struct.error, ...
            raise ImageLoadError(CORRUPT, _describe(exc)) from None
    return LoadedImage(rgb, width, height, fmt)


def _bomb_message(limit: int) -> str:
    # Pillow's own text names twice the limit for its hard error; say what the user configured.
    return f"more pixels than index.max_image_pixels ({limit:,}); raise it to allow this file"


def _failure_reason(exc: BaseException) -> str:
    """TRUNCATED for Pillow's truncation errors (raised on open for a header cut short), else CORRUPT."""
    return TRUNCATED if isinstance(exc, OSError) and "truncated" in str(exc).lower() else CORRUPT


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


def _pixels(img: Image.Image, settings: LoadSettings, data: bytes | None) -> tuple[Image.Image, int]:
    """The header-checked ``img`` decoded to RGB, displayed upright, never below ``min_side``; and its EXIF orientation.

    The turn is read from the tag, not from the shapes: draft() can decode a near-square JPEG square.
    """
    fast = None
    if data is not None and settings.decoder == "auto" and fastdecode.handles(img):
        fast = fastdecode.decode(data, img.format, img.size, settings.min_side)
    if fast is not None:
        rgb, late_orientation = fast  # libvips also reads an eXIf chunk after the pixels, as Pillow's load() does
        orientation = _orientation(img, header_only=True)
        orientation = late_orientation if orientation == 1 and late_orientation in _ORIENTATIONS else orientation
    else:
        if img.format == "JPEG" and img.mode in ("RGB", "L", "CMYK"):
            img.draft(img.mode, (settings.min_side, settings.min_side))
        img.load()
        orientation = _orientation(img)  # before any reduce: a reduced copy has no EXIF
        rgb = _small_rgb(img, settings.min_side)
    transpose = _ORIENTATIONS.get(orientation)
    return (rgb if transpose is None else rgb.transpose(transpose)), orientation


def _orientation(img: Image.Image, header_only: bool = False) -> int:
    """The EXIF orientation tag (1..8; 1 when absent or unreadable: a broken EXIF block must not cost the image).

    ``header_only``: from what Pillow read on open (EXIF, ImageMagick's text chunk, XMP), without the PNG
    plugin's load() of the pixels.
    """
    try:
        exif = Image.Image.getexif(img) if header_only else img.getexif()
        orientation = exif.get(ExifTags.Base.Orientation, 1)  # the value exif_transpose uses
        return orientation if orientation in _ORIENTATIONS else 1
    except Exception:  # a malformed tag value (even an unhashable one) included
        return 1


def _small_rgb(img: Image.Image, min_side: int) -> Image.Image:
    """RGB, a full-size decode box-reduced by the largest integer factor keeping both sides >= ``min_side``.

    Everything after decoding (rotation, features) then works on the small image. JPEGs stay as draft()
    decoded them; modes that ``reduce`` lacks or that are composited first are reduced after conversion.
    """
    factor = min(img.size) // max(1, min_side)
    if factor < 2 or img.format == "JPEG":
        return _to_rgb(img)
    if img.mode in ("RGB", "L") and "transparency" not in img.info:
        return _to_rgb(img.reduce(factor))
    return _to_rgb(img).reduce(factor)


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:  # an RGB PNG's tRNS colour key is transparency too
        return img
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_scale_to_uint8(np.asarray(img)), "L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "La", "RGBa", "PA") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _scale_to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Map 16/32-bit integer or float grey levels to 0..255 (scaling, not clipping)."""
    if pixels.dtype.kind == "f":
        lo, hi = float(np.nanmin(pixels)), float(np.nanmax(pixels))
        scaled = (pixels - lo) / (hi - lo) if hi > lo else np.zeros_like(pixels)
        return (np.nan_to_num(scaled) * 255).round().astype(np.uint8)
    # 16-bit containers are always 0..65535 (a dark image is not 8-bit); 32-bit "I" data is guessed from its range
    top = 65535 if pixels.dtype.itemsize == 2 or pixels.max(initial=0) > 255 else 255
    return (pixels.astype(np.float32) * (255.0 / top)).clip(0, 255).round().astype(np.uint8)


def load_path(path: Path, settings: LoadSettings) -> LoadedImage:
    """Load an image given as a user path (query images, tools): the format hint comes from its extension."""
    from imagerec.data.scan import format_hint

    return load_image(path, settings, format_hint(path))
