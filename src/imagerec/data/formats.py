"""Which decoders exist: Pillow's own plugins plus HEIF/HEIC from ``pillow-heif`` when it is installed.

AVIF is Pillow's own (Pillow ≥ 11.2 built with libavif); HEIF needs the ``pillow-heif`` opener, which
registers the format "HEIF" (extensions .heic, .heif, .hif) and decodes through libheif. Either is still
subject to the loader's rules: only on the allow-list, pixel limit checked on the header before decoding.
"""

from __future__ import annotations

import functools

from PIL import Image


@functools.cache
def register_plugins() -> None:
    """Register Pillow's plugins and the optional HEIF opener (once per process)."""
    Image.init()
    try:
        from pillow_heif import register_heif_opener
    except ImportError:  # optional: without it .heic files are "format not available"
        return
    register_heif_opener(thumbnails=False)  # decode the primary image, never an embedded preview


@functools.cache
def decoder_versions() -> str:
    """Versions of the decoders, for skip records: a new decoder may read what an old one could not."""
    import PIL

    try:
        import pillow_heif

        heif = pillow_heif.__version__
    except ImportError:
        heif = "none"
    from imagerec.data.fastdecode import vips_version

    return f"pillow-{PIL.__version__}+heif-{heif}+vips-{vips_version()}"
