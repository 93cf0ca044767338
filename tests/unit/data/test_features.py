"""Hand-made features: joint colour histogram, dHash, int64 hash encoding, model input crop."""

from __future__ import annotations

import io
import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imagerec.embed.base import Preprocess
from imagerec.data.features import (
    HISTOGRAM_SIDE,
    HistogramSpec,
    color_histogram,
    dhash,
    hash_from_int64,
    hash_to_int64,
    joint_histogram,
)
from imagerec.search.similarity import hamming_distance, histogram_intersection

SAMPLE_DIR = Path(__file__).resolve().parents[3] / "sample" / "caltech101-mini"
ALL_ONES = (1 << 64) - 1


def _cell(r_bin: int, g_bin: int, b_bin: int, bins: int) -> int:
    """Flat index of a joint-histogram cell: first channel most significant (C order)."""
    return (r_bin * bins + g_bin) * bins + b_bin


# -- joint_histogram ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pixel", "bins", "cell"),
    [
        ((0, 0, 0), 8, 0),
        ((255, 255, 255), 8, 511),  # last cell of 8x8x8
        # 128*8/256 = 4, 64*8/256 = 2, 200*8/256 = 6.25 → 6
        ((128, 64, 200), 8, _cell(4, 2, 6, 8)),
        # bins of width 32: 31 is the top of bin 0, 32 the bottom of bin 1
        ((31, 32, 63), 8, _cell(0, 1, 1, 8)),
        # bins of width 64: 63 → 0, 64 → 1, 255 → 3
        ((63, 64, 255), 4, _cell(0, 1, 3, 4)),
        # bins=3 (width 85⅓): 85 → 0, 86 → 1, 171 → 2
        ((85, 86, 171), 3, _cell(0, 1, 2, 3)),
        ((170, 0, 255), 3, _cell(1, 0, 2, 3)),  # 170*3/256 = 1.99 → 1
    ],
)
def test_joint_histogram_single_colour_cell(pixel, bins, cell):
    pixels = np.array([pixel] * 10, dtype=np.uint8)
    hist = joint_histogram(pixels, bins)
    assert hist.shape == (bins**3,)
    assert hist.dtype == np.float32
    assert hist[cell] == 1.0
    assert hist.sum() == pytest.approx(1.0)


def test_joint_histogram_proportions():
    # three pixels in one cell, one in another → 0.75 / 0.25
    pixels = np.array([(10, 10, 10)] * 3 + [(250, 10, 10)], dtype=np.uint8)
    hist = joint_histogram(pixels, 8)
    assert hist[_cell(0, 0, 0, 8)] == pytest.approx(0.75)
    assert hist[_cell(7, 0, 0, 8)] == pytest.approx(0.25)
    assert np.count_nonzero(hist) == 2


@pytest.mark.parametrize("bins", [2, 3, 5, 8, 16, 32])
def test_joint_histogram_matches_numpy_histogramdd(bins):
    rng = np.random.default_rng(bins)
    pixels = rng.integers(0, 256, size=(5000, 3), dtype=np.uint8)
    counts, _ = np.histogramdd(pixels.astype(np.float64), bins=(bins, bins, bins), range=[(0, 256)] * 3)
    expected = counts.ravel() / counts.sum()  # C order: first channel most significant
    hist = joint_histogram(pixels, bins)
    np.testing.assert_allclose(hist, expected, atol=1e-6)
    assert hist.sum() == pytest.approx(1.0, abs=1e-5)


def test_joint_histogram_of_no_pixels_is_zero_not_nan():
    hist = joint_histogram(np.zeros((0, 3), dtype=np.uint8), 4)
    assert hist.shape == (64,)
    assert not np.isnan(hist).any() and hist.sum() == 0


# -- color_histogram ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("colour", "bins", "cell"),
    [
        ((255, 0, 0), 8, _cell(7, 0, 0, 8)),  # 448
        ((100, 150, 200), 8, _cell(3, 4, 6, 8)),  # 100*8/256=3.1, 150*8/256=4.7, 200*8/256=6.25
        ((100, 150, 200), 2, _cell(0, 1, 1, 2)),  # halves: <128 → 0, ≥128 → 1
        ((0, 0, 0), 16, 0),
    ],
)
def test_color_histogram_rgb_solid_colour(colour, bins, cell):
    image = Image.new("RGB", (40, 30), colour)
    hist = color_histogram(image, HistogramSpec("rgb", bins))
    assert hist.shape == (bins**3,) and hist.dtype == np.float32
    assert hist[cell] == pytest.approx(1.0)
    assert hist.sum() == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("colour", "bins", "cell"),
    [
        # Pillow HSV scales hue 0..360° to 0..255. Pure red: H=0, S=255, V=255.
        ((255, 0, 0), 8, _cell(0, 7, 7, 8)),
        # pure green: H = 120/360*255 = 85 → 85*8/256 = 2.66 → bin 2; S=V=255 → bin 7
        ((0, 255, 0), 8, _cell(2, 7, 7, 8)),
        ((0, 255, 0), 4, _cell(1, 3, 3, 4)),  # 85*4/256 = 1.33 → 1
        # pure blue: H = 240/360*255 = 170 → 170*8/256 = 5.3 → bin 5
        ((0, 0, 255), 8, _cell(5, 7, 7, 8)),
        # mid grey: no hue, no saturation, V=128 → 128*8/256 = 4
        ((128, 128, 128), 8, _cell(0, 0, 4, 8)),
    ],
)
def test_color_histogram_hsv_solid_colour(colour, bins, cell):
    image = Image.new("RGB", (40, 30), colour)
    hist = color_histogram(image, HistogramSpec("hsv", bins))
    assert hist[cell] == pytest.approx(1.0)
    assert hist.sum() == pytest.approx(1.0)


def test_color_histogram_rgb_and_hsv_differ_for_same_image():
    image = Image.new("RGB", (20, 20), (0, 255, 0))
    rgb = color_histogram(image, HistogramSpec("rgb", 8))
    hsv = color_histogram(image, HistogramSpec("hsv", 8))
    assert np.argmax(rgb) == _cell(0, 7, 0, 8)
    assert np.argmax(hsv) == _cell(2, 7, 7, 8)


def test_color_histogram_two_halves_large_image():
    # 400x200: left half red, right half blue; thumbnailed to 128x64 first, so only the seam column blends.
    pixels = np.zeros((200, 400, 3), dtype=np.uint8)
    pixels[:, :200] = (255, 0, 0)
    pixels[:, 200:] = (0, 0, 255)
    image = Image.fromarray(pixels, "RGB")
    hist = color_histogram(image, HistogramSpec("rgb", 8))
    assert hist.sum() == pytest.approx(1.0, abs=1e-5)
    assert hist[_cell(7, 0, 0, 8)] == pytest.approx(0.5, abs=0.03)
    assert hist[_cell(0, 0, 7, 8)] == pytest.approx(0.5, abs=0.03)
    assert image.size == (400, 200)  # the caller's image is not modified


def test_color_histogram_is_resolution_independent():
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)  # coarse random colour blocks
    big = Image.fromarray(blocks, "RGB").resize((800, 600), Image.Resampling.NEAREST)
    small = big.resize((200, 150), Image.Resampling.NEAREST)
    spec = HistogramSpec("rgb", 8)
    assert histogram_intersection(color_histogram(big, spec), color_histogram(small, spec)) > 0.9


def test_histogram_spec_size_and_key():
    assert HistogramSpec("rgb", 8).size == 512
    assert HistogramSpec("hsv", 4).size == 64
    keys = {HistogramSpec(s, b).key for s in ("rgb", "hsv") for b in (4, 8)}
    assert len(keys) == 4  # any change in space or bins changes the key
    assert str(HISTOGRAM_SIDE) in HistogramSpec().key


# -- dhash --------------------------------------------------------------------------------------


def _grey_9x8(values: np.ndarray) -> Image.Image:
    """An RGB image whose 9x8 grey version is exactly ``values`` (so resizing is the identity)."""
    assert values.shape == (8, 9)
    return Image.fromarray(np.repeat(values.astype(np.uint8)[:, :, None], 3, axis=2), "RGB")


def test_dhash_increasing_gradient_is_all_ones():
    values = np.tile(np.arange(9) * 25 + 10, (8, 1))  # every pixel brighter than its left neighbour
    assert dhash(_grey_9x8(values)) == ALL_ONES


def test_dhash_decreasing_gradient_and_flat_image_are_zero():
    values = np.tile(250 - np.arange(9) * 25, (8, 1))
    assert dhash(_grey_9x8(values)) == 0
    assert dhash(_grey_9x8(np.full((8, 9), 128))) == 0  # equal is not brighter


def test_dhash_bit_order_is_row_major_msb_first():
    first = np.full((8, 9), 100)
    first[0, 1] = 200  # only comparison (row 0, col 1 > col 0) is true → most significant bit
    assert dhash(_grey_9x8(first)) == 1 << 63
    last = np.full((8, 9), 100)
    last[7, 8] = 200  # only the very last comparison → least significant bit
    assert dhash(_grey_9x8(last)) == 1
    top_row = np.full((8, 9), 100)
    top_row[0] = np.arange(9) * 20  # whole first row increasing → the top 8 bits
    assert dhash(_grey_9x8(top_row)) == 0xFF << 56


def test_dhash_of_larger_gradient_images():
    ramp = np.tile(np.linspace(0, 255, 180).astype(np.uint8), (160, 1))
    rgb = np.repeat(ramp[:, :, None], 3, axis=2)
    assert dhash(Image.fromarray(rgb, "RGB")) == ALL_ONES
    assert dhash(Image.fromarray(rgb[:, ::-1].copy(), "RGB")) == 0


def _jpeg_copy(image: Image.Image, scale: float, quality: int) -> Image.Image:
    w, h = image.size
    small = image.resize((round(w * scale), round(h * scale)), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


@pytest.mark.parametrize(
    ("photo", "other"),
    [
        ("sunflower/image_0001.jpg", "Faces_easy/image_0001.jpg"),
        ("car_side/image_0001.jpg", "chandelier/image_0002.jpg"),
        ("ketch/image_0001.jpg", "watch/image_0001.jpg"),
    ],
)
def test_dhash_survives_resize_and_recompression_of_real_photo(photo, other):
    original = Image.open(SAMPLE_DIR / photo).convert("RGB")
    different = Image.open(SAMPLE_DIR / other).convert("RGB")
    h = dhash(original)
    assert 0 <= h < 1 << 64
    near = hamming_distance(h, dhash(_jpeg_copy(original, 0.5, 60)))
    far = hamming_distance(h, dhash(different))
    assert near <= 8, f"resized/recompressed copy differs in {near} bits"
    assert far >= 16, f"a different photo is only {far} bits away"


# -- int64 encoding -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("unsigned", "signed"),
    [
        (0, 0),
        (1, 1),
        ((1 << 63) - 1, (1 << 63) - 1),  # largest value that fits unchanged
        (1 << 63, -(1 << 63)),  # top bit set: two's complement
        (ALL_ONES, -1),
        ((1 << 63) + 5, -(1 << 63) + 5),
    ],
)
def test_hash_int64_encoding_hand_values(unsigned, signed):
    assert hash_to_int64(unsigned) == signed
    assert hash_from_int64(signed) == unsigned


def test_hash_int64_round_trip_matches_numpy_reinterpretation():
    rng = np.random.default_rng(0)
    values = [int(v) for v in rng.integers(0, np.iinfo(np.uint64).max, size=200, dtype=np.uint64, endpoint=True)]
    values += [0, ALL_ONES, 1 << 63, (1 << 63) - 1]
    for v in values:
        s = hash_to_int64(v)
        assert -(1 << 63) <= s < 1 << 63
        assert s == int(np.array(v, dtype=np.uint64).view(np.int64))  # same bits, read as signed
        assert hash_from_int64(s) == v


def test_hash_int64_survives_sqlite():
    values = [0, 1 << 63, ALL_ONES, 0x0123456789ABCDEF, 0xFEDCBA9876543210]
    with closing(sqlite3.connect(":memory:")) as db:
        db.execute("CREATE TABLE t(h INTEGER)")
        with pytest.raises(OverflowError):  # why the encoding exists
            db.execute("INSERT INTO t VALUES (?)", (ALL_ONES,))
        db.executemany("INSERT INTO t VALUES (?)", [(hash_to_int64(v),) for v in values])
        assert [hash_from_int64(r[0]) for r in db.execute("SELECT h FROM t ORDER BY rowid")] == values


# -- model_input --------------------------------------------------------------------------------


def _stripes(width: int, height: int, bounds: tuple[int, int], vertical: bool) -> Image.Image:
    """Red before bounds[0], green between, blue from bounds[1] on (along x if vertical stripes, else y)."""
    length = width if vertical else height
    line = np.zeros((length, 3), dtype=np.uint8)
    line[: bounds[0]] = (255, 0, 0)
    line[bounds[0] : bounds[1]] = (0, 255, 0)
    line[bounds[1] :] = (0, 0, 255)
    pixels = np.broadcast_to(line[None, :, :], (height, width, 3)) if vertical else np.broadcast_to(line[:, None, :], (height, width, 3))
    return Image.fromarray(np.ascontiguousarray(pixels), "RGB")


@pytest.mark.parametrize("size", [16, 32, 57])
@pytest.mark.parametrize("dims", [(200, 100), (100, 200), (64, 64), (10, 20), (33, 1000), (1, 1)])
def test_model_input_shape_and_dtype(size, dims):
    out = Preprocess(size)(Image.new("RGB", dims, (1, 2, 3)))
    assert out.shape == (size, size, 3)
    assert out.dtype == np.uint8
    assert (out == (1, 2, 3)).all()


def test_model_input_wide_image_keeps_horizontal_centre():
    # 200x100 → shorter side 100 → 32: scaled to 64x32, crop columns 16..48 of 64 = 50..150 of the original.
    # Red 0..40 and blue 160..200 lie outside that window, so only green is left.
    image = _stripes(200, 100, (40, 160), vertical=True)
    out = Preprocess(32)(image)
    assert out.shape == (32, 32, 3)
    assert (out[..., 1] > 200).all() and (out[..., 0] < 30).all() and (out[..., 2] < 30).all()


def test_model_input_tall_image_keeps_vertical_centre():
    image = _stripes(100, 200, (40, 160), vertical=False)
    out = Preprocess(32)(image)
    assert (out[..., 1] > 200).all() and (out[..., 0] < 30).all() and (out[..., 2] < 30).all()


@pytest.mark.parametrize("wide", [True, False])
def test_model_input_crop_is_centred_not_corner(wide):
    # Red channel = position along the long side (0..199). 200x100 → 64x32 (scale 0.32), crop 16..48:
    # output index j samples original position (16 + j + 0.5) / 0.32 − 0.5, i.e. 51.1 for j=0, 147.9 for j=31.
    # A crop from the start or the end would give 0..97 or 102..199 instead.
    ramp = np.arange(200, dtype=np.uint8)
    pixels = np.zeros((100, 200, 3), dtype=np.uint8)
    pixels[..., 0] = ramp[None, :]
    if not wide:
        pixels = np.ascontiguousarray(pixels.transpose(1, 0, 2))
    out = Preprocess(32)(Image.fromarray(pixels, "RGB")).astype(float)[..., 0]
    profile = out.mean(axis=0 if wide else 1)  # along the long side
    assert profile[0] == pytest.approx(51.1, abs=3)
    assert profile[-1] == pytest.approx(147.9, abs=3)
    assert profile.mean() == pytest.approx(99.5, abs=2)
    assert np.ptp(out.mean(axis=1 if wide else 0)) < 1  # constant across the short side


def test_model_input_exact_size_square_is_unchanged():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(Preprocess(32)(Image.fromarray(pixels, "RGB")), pixels)


def test_model_input_small_image_is_upscaled():
    # 8x16 → shorter side 8 → 32 (×4): 32x64, crop rows 16..48 → the middle half of the original rows.
    pixels = np.zeros((16, 8, 3), dtype=np.uint8)
    pixels[:4] = 255  # top quarter white: cropped away
    pixels[12:] = 255  # bottom quarter white: cropped away
    out = Preprocess(32)(Image.fromarray(pixels, "RGB"))
    assert out.shape == (32, 32, 3)
    assert out[4:-4].max() == 0  # the centre is black (edges may blend with the white rows)
