"""The libvips fast path (``index.decoder: auto``) against the Pillow path on real photos: same safety, features
equal within the stated tolerance, and really taken for the files it claims."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imagerec.data import fastdecode, loading
from imagerec.data.features import HistogramSpec, color_histogram, dhash
from imagerec.data.loading import LoadSettings, load_image
from imagerec.embed.base import Preprocess
from imagerec.errors import ImageLoadError

ALLOWED = ("JPEG", "PNG", "WEBP")
# The tolerance the docs state: dHash within 4 of 64 bits, histogram L1 within 0.15 (of 2), model input within
# 3 grey levels on average at 160-224 px (shrink-on-load and box reduce vs a full decode; libvips vs Pillow compositing).
MAX_HAMMING, MAX_HIST_L1, MAX_INPUT_MAE = 4, 0.15, 3.0


def _settings(decoder: str, min_side: int, max_pixels: int = 178_956_970) -> LoadSettings:
    return LoadSettings(ALLOWED, max_pixels, min_side, True, decoder)


@pytest.fixture(scope="module")
def photos(shared_data, tmp_path_factory) -> list[Path]:
    """The shared large PNG photos and WebP encodings of two large JPEG photos (kept 2,400 px wide: quick to write)."""
    folder = shared_data / "large-photos"
    out = tmp_path_factory.mktemp("webp")
    webps = []
    for name in ("the-mouse.jpg", "Kleiber_by_Lukas_Baubkus.jpg"):
        with Image.open(folder / name) as img:
            img = img.convert("RGB")
            img.thumbnail((2400, 2400))
            webps.append(out / f"{name}.webp")
            img.save(webps[-1], quality=85)
    return sorted(folder.glob("*.png")) + webps


def _features(path: Path, settings: LoadSettings):
    loaded = load_image(path, settings)
    image = loaded.image
    return loaded, color_histogram(image, HistogramSpec()), dhash(image), Preprocess(settings.min_side)(image)


@pytest.mark.parametrize("min_side", [64, 224])
def test_fast_path_features_match_pillow_within_tolerance(photos, min_side):
    for path in photos:
        with Image.open(path) as img:
            assert fastdecode.handles(img), path.name  # the fast path really runs for these photos
        fast, hist_f, hash_f, input_f = _features(path, _settings("auto", min_side))
        slow, hist_s, hash_s, input_s = _features(path, _settings("pillow", min_side))
        assert (fast.width, fast.height, fast.format) == (slow.width, slow.height, slow.format), path.name
        assert min(fast.image.size) >= min_side and max(fast.image.size) < max(fast.width, fast.height), path.name
        assert bin(hash_f ^ hash_s).count("1") <= MAX_HAMMING, path.name
        assert np.abs(hist_f - hist_s).sum() <= MAX_HIST_L1, path.name
        if min_side >= 160:  # a model input (160-224 px for the default embedder; 64 is the features' own size)
            assert np.abs(input_f.astype(int) - input_s.astype(int)).mean() <= MAX_INPUT_MAE, path.name


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_fast_path_applies_exif_orientation(tmp_path, fmt):
    rng = np.random.default_rng(1)
    pixels = np.repeat(np.repeat(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8), 20, 0), 20, 1)  # 800x600 blocks
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed turned 90° clockwise
    path = tmp_path / f"turned.{fmt.lower()}"
    Image.fromarray(pixels).save(path, fmt, exif=exif, **({"lossless": True} if fmt == "WEBP" else {}))
    fast = load_image(path, _settings("auto", 100))
    slow = load_image(path, _settings("pillow", 100))
    assert (fast.width, fast.height) == (slow.width, slow.height) == (600, 800)
    assert fast.image.width < fast.image.height and slow.image.width < slow.image.height
    w, h = min(fast.image.width, slow.image.width), min(fast.image.height, slow.image.height)  # edge rows may round apart
    diff = np.abs(np.asarray(fast.image, dtype=int)[:h, :w] - np.asarray(slow.image, dtype=int)[:h, :w])
    assert diff.mean() < 10.0  # a wrong turn or flip of the random blocks differs by ~85; scaling alone by < 5


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_pixel_limit_refuses_before_the_fast_decoder_runs(tmp_path, fmt):
    path = tmp_path / f"big.{fmt.lower()}"
    Image.new("RGB", (3000, 2000), (10, 20, 30)).save(path, fmt)
    settings = _settings("auto", 64, max_pixels=5_000_000)
    with pytest.raises(ImageLoadError) as info:
        load_image(path, settings)
    assert info.value.reason == loading.DECOMPRESSION_BOMB


@pytest.mark.parametrize("fmt, cut", [("PNG", 0.5), ("PNG", 0.9), ("WEBP", 0.5), ("WEBP", 0.95)])
def test_truncated_file_gets_pillows_verdict_on_the_fast_path(tmp_path, shared_data, fmt, cut):
    with Image.open(shared_data / "large-photos" / "the-mouse.jpg") as img:
        img = img.convert("RGB").resize((1200, 750))
    whole = tmp_path / f"whole.{fmt.lower()}"
    img.save(whole, fmt)
    data = whole.read_bytes()
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: int(len(data) * cut)])
    reasons = []
    for decoder in ("auto", "pillow"):
        with pytest.raises(ImageLoadError) as info:
            load_image(path, _settings(decoder, 64))
        reasons.append(info.value.reason)
    assert reasons[0] == reasons[1] and reasons[0] in (loading.TRUNCATED, loading.CORRUPT)


def test_fast_decoder_refuses_what_it_does_not_handle(tmp_path, make_image):
    """16-bit, palette and colour-keyed PNGs are left to Pillow (scaling, compositing rules of its own)."""
    grey16 = tmp_path / "grey16.png"
    Image.fromarray(np.full((80, 90), 40000, dtype=np.uint16)).save(grey16)
    palette = make_image(tmp_path / "palette.png", mode="P")
    for path in (grey16, palette):
        with Image.open(path) as img:
            assert not fastdecode.handles(img), path.name
        assert load_image(path, _settings("auto", 32)).image.mode == "RGB"


def test_file_above_the_read_cap_is_decoded_from_the_file(tmp_path, make_image, monkeypatch):
    path = make_image(tmp_path / "plain.png", size=(300, 200))
    in_memory = np.asarray(load_image(path, _settings("auto", 64)).image)
    monkeypatch.setattr(loading, "MAX_READ_BYTES", 100)  # smaller than the file: Pillow reads the file itself
    from_file = np.asarray(load_image(path, _settings("auto", 64)).image)
    assert in_memory.shape == from_file.shape
    assert np.abs(in_memory.astype(int) - from_file.astype(int)).mean() < 2.0
