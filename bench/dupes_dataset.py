"""The near-duplicate benchmark folder: real Caltech-101 photos plus edited and exact copies of some of them.

``make_quality_folder`` writes (seeded, so reruns give the same files)::

    <dest>/orig/<class>__<name>.jpg                 the sampled originals (byte copies of the Caltech files)
    <dest>/edit/<edit>/<class>__<name>.<ext>         one copy per edit of each of ``n_edited`` originals
    <dest>/copy/<class>__<name>.jpg                  exact byte copies of ``n_edited`` originals

Edits (as in the duplicates issue): resize 50 %, JPEG q30, crop 5–15 % of the area (random position),
brightness ±20 %, re-saved as PNG, small rotation (1–3°), exact byte copy. Every file's *family* is its
``<class>__<name>`` stem: two files are a true duplicate pair iff they share it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

EDITS = ("resize50", "jpeg30", "crop", "brightness", "png", "rotate")
EXACT = "exact"


def _edit(img: Image.Image, edit: str, rng: np.random.Generator) -> tuple[Image.Image, dict]:
    jpeg = {"format": "JPEG", "quality": 90}
    if edit == "resize50":
        return img.resize((max(1, img.width // 2), max(1, img.height // 2)), Image.Resampling.LANCZOS), jpeg
    if edit == "jpeg30":
        return img, {"format": "JPEG", "quality": 30}
    if edit == "crop":
        side = np.sqrt(1.0 - rng.uniform(0.05, 0.15))
        cw, ch = round(img.width * side), round(img.height * side)
        left, top = int(rng.integers(0, img.width - cw + 1)), int(rng.integers(0, img.height - ch + 1))
        return img.crop((left, top, left + cw, top + ch)), jpeg
    if edit == "brightness":
        return ImageEnhance.Brightness(img).enhance(float(rng.choice([0.8, 1.2]))), jpeg
    if edit == "png":
        return img, {"format": "PNG"}
    if edit == "rotate":
        angle = float(rng.uniform(1.0, 3.0) * rng.choice([-1, 1]))
        return img.rotate(angle, Image.Resampling.BICUBIC, expand=False), jpeg
    raise ValueError(edit)


def make_quality_folder(caltech: Path, dest: Path, *, n_images: int = 2000, n_edited: int = 300, seed: int = 0) -> Path:
    """Write the folder (once; a complete earlier one is reused) and return ``dest``."""
    done = dest / ".complete"
    if done.exists():
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    rng = np.random.default_rng(seed)
    files = sorted(p for p in caltech.glob("*/*.jpg") if p.parent.name != "BACKGROUND_Google")
    chosen = [files[i] for i in np.sort(rng.choice(len(files), size=n_images, replace=False))]
    edited = set(rng.choice(n_images, size=n_edited, replace=False).tolist())
    for i, src in enumerate(chosen):
        stem = f"{src.parent.name}__{src.stem}"
        (dest / "orig").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest / "orig" / f"{stem}.jpg")
        if i not in edited:
            continue
        (dest / "copy").mkdir(exist_ok=True)
        shutil.copyfile(src, dest / "copy" / f"{stem}.jpg")
        with Image.open(src) as im:
            img = im.convert("RGB")
        for edit in EDITS:
            out, options = _edit(img, edit, rng)
            folder = dest / "edit" / edit
            folder.mkdir(parents=True, exist_ok=True)
            out.save(folder / f"{stem}.{'png' if options['format'] == 'PNG' else 'jpg'}", **options)
    done.touch()
    return dest


def family(relpath: str) -> str:
    """The source photo a file of the folder comes from."""
    return Path(relpath).stem


def edit_of(relpath: str) -> str:
    """'orig', one of ``EDITS``, or ``EXACT`` for a file of the folder."""
    parts = Path(relpath).parts
    return {"orig": "orig", "copy": EXACT}.get(parts[0], parts[1] if len(parts) > 2 else parts[0])
