"""match: finding a query photo inside a candidate photo (real sample photos, real edits)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from imagerec.search.match import THUMB_SIDE, grey_thumbnail, match_correlation

SAMPLE_DIR = Path(__file__).resolve().parents[3] / "sample" / "caltech101-mini"
CLASSES = ("Faces_easy", "Leopards", "airplanes", "bonsai", "car_side", "chandelier", "ketch", "sunflower", "watch")


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    """Two photos from each of nine classes of the bundled sample."""
    picked = [path for name in CLASSES for path in sorted((SAMPLE_DIR / name).glob("*.jpg"))[:2]]
    return [Image.open(path).convert("RGB") for path in picked]


def _crop(image: Image.Image, keep_area: float, anchor=(0.5, 0.5), keep_aspect=True) -> Image.Image:
    w, h = image.size
    if keep_aspect:
        cw, ch = round(w * keep_area ** 0.5), round(h * keep_area ** 0.5)
    else:
        cw, ch = round(w * keep_area), h
    left, top = round((w - cw) * anchor[0]), round((h - ch) * anchor[1])
    return image.crop((left, top, left + cw, top + ch))


def _edits(image: Image.Image) -> dict[str, Image.Image]:
    half = image.resize((image.width // 2, image.height // 2), Image.Resampling.LANCZOS)
    brighter = ImageEnhance.Contrast(ImageEnhance.Brightness(image).enhance(1.25)).enhance(0.8)
    return {"crop30": _crop(image, 0.7), "crop30_corner": _crop(image, 0.7, anchor=(0.0, 1.0)),
            "crop_width": _crop(image, 0.8, keep_aspect=False), "crop30_half": _crop(half, 0.7),
            "brightness_contrast": brighter, "same": image}


def test_thumbnail_keeps_the_aspect_ratio_at_the_longer_side():
    thumb = grey_thumbnail(Image.new("RGB", (300, 200), (10, 200, 30)))
    assert thumb.shape == (64, THUMB_SIDE) and thumb.dtype == np.float32


# brightness x1.25 clips highlights, which no correlation is blind to: its copies match a little lower
@pytest.mark.parametrize("edit, least", [("crop30", 0.96), ("crop30_corner", 0.96), ("crop_width", 0.96),
                                         ("crop30_half", 0.96), ("brightness_contrast", 0.9), ("same", 0.99)])
def test_an_edited_copy_matches_its_own_photo_best(photos, edit, least):
    thumbs = [grey_thumbnail(p) for p in photos]
    for i, photo in enumerate(photos):
        query = grey_thumbnail(_edits(photo)[edit])
        scores = [match_correlation(query, t) for t in thumbs]
        assert scores[i] >= least, (edit, i, scores[i])
        assert scores[i] == max(scores), (edit, i, scores[i], max(s for j, s in enumerate(scores) if j != i))


def test_other_photos_stay_well_below_a_copy(photos):
    thumbs = [grey_thumbnail(p) for p in photos]
    for i, photo in enumerate(photos):
        query = grey_thumbnail(_crop(photo, 0.7))
        others = [match_correlation(query, t) for j, t in enumerate(thumbs) if j != i]
        assert np.median(others) < 0.7


def test_flat_images_match_nothing(photos):
    flat = grey_thumbnail(Image.new("RGB", (120, 90), (128, 128, 128)))
    photo = grey_thumbnail(photos[0])
    assert match_correlation(flat, photo) == -1.0
    assert match_correlation(photo, flat) == -1.0


def test_a_query_larger_than_the_candidate_is_scaled_down_to_fit(photos):
    big, small = photos[0], photos[0].resize((photos[0].width // 3, photos[0].height // 3))
    assert match_correlation(grey_thumbnail(big, 2 * THUMB_SIDE), grey_thumbnail(small)) >= 0.97
