"""Contact sheets: the query image(s), then the top-k results with rank and score (Pillow only).

Layout (all sizes in pixels, see ``sheet_size``)::

    ┌ title bar ──────────────────────────────────────────────┐
    │ [query 1] [query 2] ...                                  │  one row, each captioned "query: <name>"
    │ [#1 thumb] [#2 thumb] [#3 thumb] [#4 thumb] [#5 thumb]   │  ``columns`` per row, captioned
    │ ...                                                      │  "#rank  id N" / "score 0.873"
    └──────────────────────────────────────────────────────────┘

Near-duplicates (dHash distance ≤ ``query.near_duplicate_max_bits``) get a red frame and "near-dup".
Images are read with the same safe loader as ``index``; a result that can no longer be read is drawn
as a grey placeholder.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from imagerec.data import loading
from imagerec.data.scan import format_hint
from imagerec.config import Config
from imagerec.errors import ImagerecError, ImageLoadError
from imagerec.search.recommender import QueryResponse
from imagerec.store.records import absolute_path

THUMB = 160
PAD = 10
CAPTION = 30
TITLE = 28
COLUMNS = 5
BACKGROUND = (255, 255, 255)
NEAR_DUP = (220, 30, 30)
KEEP = (20, 150, 60)


def sheet_size(n_queries: int, n_results: int, columns: int = COLUMNS, thumb: int = THUMB) -> tuple[int, int]:
    """(width, height) of the sheet for that many query images and results."""
    cell_w, cell_h = thumb + PAD, thumb + CAPTION + PAD
    cols = max(columns, min(n_queries, 10), 1)
    result_rows = math.ceil(n_results / cols) if n_results else 0
    query_rows = math.ceil(n_queries / cols)
    return PAD + cols * cell_w, TITLE + PAD + (query_rows + result_rows) * cell_h


def render_contact_sheet(response: QueryResponse, config: Config, output: str | os.PathLike,
                         columns: int = COLUMNS, thumb: int = THUMB) -> Path:
    """Write the contact sheet PNG for ``response`` to ``output`` and return its path."""
    output = Path(output)
    n_q, n_r = len(response.queries), len(response.results)
    cols = max(columns, min(n_q, 10), 1)
    width, height = sheet_size(n_q, n_r, columns, thumb)
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    w = response.weights
    draw.text((PAD, 8), f"{n_q} query image(s), top {n_r}; weights embedding {w.embedding:.2f} color {w.color:.2f} "
                        f"dhash {w.dhash:.2f}", fill=(0, 0, 0), font=font)
    settings = loading.LoadSettings.from_config(config.index, thumb)
    root = config.data.image_root

    def cell(index: int, row_offset: int) -> tuple[int, int]:
        row, col = divmod(index, cols)
        return PAD + col * (thumb + PAD), TITLE + PAD + (row + row_offset) * (thumb + CAPTION + PAD)

    for i, q in enumerate(response.queries):
        source = q.file_path or (absolute_path(root, q.rel_path) if q.rel_path is not None else None)
        x, y = cell(i, 0)
        _paste(sheet, draw, source, settings, x, y, thumb, outline=(30, 90, 220))
        name = os.path.basename(q.label) if q.file_path else q.label
        draw.text((x, y + thumb + 3), f"query: {name}"[:28], fill=(30, 90, 220), font=font)
    offset = math.ceil(n_q / cols)
    for i, r in enumerate(response.results):
        x, y = cell(i, offset)
        _paste(sheet, draw, absolute_path(root, r.rel_path), settings, x, y, thumb,
               outline=NEAR_DUP if r.near_duplicate else None)
        draw.text((x, y + thumb + 3), f"#{r.rank}  id {r.id}" + ("  near-dup" if r.near_duplicate else ""),
                  fill=NEAR_DUP if r.near_duplicate else (0, 0, 0), font=font)
        draw.text((x, y + thumb + 16), f"score {r.score:.3f}", fill=(60, 60, 60), font=font)
    return _save(sheet, output)


def render_group_sheet(group, config: Config, output: str | os.PathLike, columns: int = COLUMNS, thumb: int = THUMB) -> Path:
    """Write one duplicate group (``dedup.DuplicateGroup``) as a contact sheet: keeper framed green, then the others."""
    output = Path(output)
    cols = max(1, min(columns, len(group.members)))
    width = PAD + cols * (thumb + PAD)
    height = TITLE + PAD + math.ceil(len(group.members) / cols) * (thumb + CAPTION + PAD)
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    draw.text((PAD, 8), f"{group.tier}: {len(group.members)} images, keep id {group.keep}", fill=(0, 0, 0), font=font)
    settings = loading.LoadSettings.from_config(config.index, thumb)
    members = sorted(group.members, key=lambda m: not m.keep)
    for i, m in enumerate(members):
        row, col = divmod(i, cols)
        x, y = PAD + col * (thumb + PAD), TITLE + PAD + row * (thumb + CAPTION + PAD)
        _paste(sheet, draw, os.fsencode(m.path), settings, x, y, thumb, outline=KEEP if m.keep else None)
        draw.text((x, y + thumb + 3), f"id {m.id}  {m.width}x{m.height}" + ("  keep" if m.keep else ""),
                  fill=KEEP if m.keep else (0, 0, 0), font=font)
        evidence = f"bits {m.hamming}" + (f"  cos {m.cosine:.3f}" if m.cosine is not None else "")
        draw.text((x, y + thumb + 16), evidence if not m.keep else os.path.basename(m.path)[:26], fill=(60, 60, 60), font=font)
    return _save(sheet, output)


def _save(sheet: Image.Image, output: Path) -> Path:
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        sheet.save(output, format="PNG")
    except OSError as exc:
        raise ImagerecError(f"{output}: cannot write contact sheet ({exc.strerror or exc})") from None
    return output


def _paste(sheet: Image.Image, draw: ImageDraw.ImageDraw, source, settings, x: int, y: int, thumb: int, outline=None) -> None:
    image = None
    if source is not None:
        try:
            image = loading.load_image(source, settings, format_hint(source)).image
        except ImageLoadError:
            image = None
    if image is None:
        draw.rectangle((x, y, x + thumb - 1, y + thumb - 1), fill=(200, 200, 200))
        draw.text((x + 8, y + thumb // 2 - 6), "unavailable", fill=(80, 80, 80))
    else:
        image = image.copy()
        image.thumbnail((thumb, thumb), Image.Resampling.BILINEAR)
        sheet.paste(image, (x + (thumb - image.width) // 2, y + (thumb - image.height) // 2))
    if outline is not None:
        draw.rectangle((x - 3, y - 3, x + thumb + 2, y + thumb + 2), outline=outline, width=3)
