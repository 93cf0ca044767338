"""loading.load_image on odd-but-valid and hostile files: pixels checked against Pillow/numpy references."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from imagerec.data import loading
from imagerec.errors import ImageLoadError
from imagerec.data.loading import LoadSettings, load_image

ALLOWED = ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP")
NO_DRAFT = LoadSettings(ALLOWED, max_pixels=178_956_970, min_side=100_000)  # full-resolution decode
EXIF_TAG_ORIENTATION = 0x0112


@pytest.fixture(autouse=True)
def _restore_pillow_pixel_limit():
    """load_image sets Image.MAX_IMAGE_PIXELS process-wide; keep it from leaking into other tests."""
    saved = Image.MAX_IMAGE_PIXELS
    yield
    Image.MAX_IMAGE_PIXELS = saved


def _pixels(loaded) -> np.ndarray:
    assert loaded.image.mode == "RGB"
    return np.asarray(loaded.image, dtype=np.int16)


def _on_white(img: Image.Image) -> np.ndarray:
    """Reference compositing on white, in numpy: c * a + 255 * (1 - a)."""
    rgba = np.asarray(img.convert("RGBA"), dtype=np.float64)
    alpha = rgba[..., 3:] / 255.0
    return np.round(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.int16)


def _reference(path: Path) -> np.ndarray:
    """Full Pillow decode, EXIF orientation applied, transparency composited on white."""
    with Image.open(path) as img:
        oriented = ImageOps.exif_transpose(img)
        if oriented.mode in ("RGBA", "LA", "PA") or "transparency" in oriented.info:
            return _on_white(oriented)
        return np.asarray(oriented.convert("RGB"), dtype=np.int16)


def _reason(path, settings=NO_DRAFT, hint=None) -> str:
    with pytest.raises(ImageLoadError) as info:
        load_image(path, settings, hint)
    return info.value.reason


# -- EXIF orientation ---------------------------------------------------------------------------


def _orientation_files(root: Path) -> list[Path]:
    folder = root / "bad-inputs"
    files = sorted((folder / "exif_orientation").iterdir())
    return files + [folder / "derived_from_real_photos" / f"exif_orientation_{n}.jpg" for n in (3, 6, 8)]


@pytest.fixture(scope="module")
def orientation_files(shared_data) -> list[Path]:
    return _orientation_files(shared_data)


def test_exif_orientation_matches_exif_transpose_of_full_decode(orientation_files):
    seen_orientations = set()
    for path in orientation_files:
        with Image.open(path) as img:
            seen_orientations.add(img.getexif().get(EXIF_TAG_ORIENTATION))
        expected = _reference(path)
        loaded = load_image(path, NO_DRAFT, Image.open(path).format)
        got = _pixels(loaded)
        assert got.shape == expected.shape, path.name
        assert (loaded.width, loaded.height) == (expected.shape[1], expected.shape[0]), path.name
        assert np.abs(got - expected).max() <= 1, path.name
    assert set(range(2, 9)) <= seen_orientations  # the corpus really covers orientations 2..8


@pytest.mark.parametrize("n, stored, displayed", [(3, (398, 164), (398, 164)), (6, (164, 398), (398, 164)), (8, (164, 398), (398, 164))])
def test_derived_exif_orientation_reports_displayed_size_also_when_drafted(shared_data, n, stored, displayed):
    path = shared_data / "bad-inputs" / "derived_from_real_photos" / f"exif_orientation_{n}.jpg"
    with Image.open(path) as img:
        assert img.size == stored and img.getexif()[EXIF_TAG_ORIENTATION] == n
    reference = Image.fromarray(_reference(path).astype(np.uint8))
    loaded = load_image(path, LoadSettings(ALLOWED, 178_956_970, min_side=32), "JPEG")
    assert (loaded.width, loaded.height) == displayed
    assert loaded.image.width < displayed[0]  # draft() reduced it
    assert loaded.image.width / loaded.image.height == pytest.approx(displayed[0] / displayed[1], rel=0.05)
    expected = np.asarray(reference.resize(loaded.image.size, Image.Resampling.BOX), dtype=np.int16)
    assert np.abs(_pixels(loaded) - expected).mean() < 12


# -- 16-bit, CMYK, transparency, 1-bit, animation ---------------------------------------------


@pytest.mark.parametrize("name", ["gray16.png", "gray16.tif"])
def test_16bit_grey_is_scaled_not_clipped(shared_data, name):
    path = shared_data / "bad-inputs" / "derived_from_real_photos" / name
    with Image.open(path) as img:
        data = np.asarray(img)
    assert data.dtype.itemsize == 2 and data.max() > 255  # really 16-bit data
    reference = data.astype(np.float64) / 257.0
    got = _pixels(load_image(path, NO_DRAFT, Image.open(path).format))
    assert np.abs(got[..., 0] - reference).max() <= 1
    assert abs(got.mean() - reference.mean()) < 1
    assert (got == 255).mean() == pytest.approx((data == 65535).mean(), abs=0.01)  # clipping would saturate


@pytest.mark.parametrize("fmt, suffix", [("PNG", ".png"), ("TIFF", ".tif")])
def test_dark_16bit_grey_stays_dark(tmp_path, fmt, suffix):
    """A 16-bit image whose values are all below 256 is nearly black, not an 8-bit image."""
    data = np.tile(np.arange(0, 256, 2, dtype=np.uint16), (8, 1))  # 0..254 of 65535
    path = tmp_path / f"dark16{suffix}"
    Image.fromarray(data).save(path, format=fmt)
    with Image.open(path) as img:
        assert img.mode.startswith("I;16") and np.array_equal(np.asarray(img), data)
    got = _pixels(load_image(path, NO_DRAFT, fmt))
    assert np.abs(got[..., 0] - data / 257.0).max() <= 1


def test_cmyk_tiff_known_colours(tmp_path):
    cmyk = Image.new("CMYK", (4, 1))
    for x, value in enumerate([(0, 0, 0, 0), (0, 255, 255, 0), (255, 0, 255, 0), (0, 0, 0, 255)]):
        cmyk.putpixel((x, 0), value)
    path = tmp_path / "cmyk.tif"
    cmyk.save(path)
    got = _pixels(load_image(path, NO_DRAFT, "TIFF"))
    assert got.tolist() == [[[255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 0]]]


def test_cmyk_jpeg_known_colours(tmp_path):
    cmyk = Image.new("CMYK", (64, 32), (0, 0, 0, 0))
    cmyk.paste((0, 255, 255, 0), (32, 0, 64, 32))  # right half red
    path = tmp_path / "cmyk.jpg"
    cmyk.save(path, quality=95)
    got = _pixels(load_image(path, NO_DRAFT, "JPEG"))
    assert np.abs(got[:, :24] - [255, 255, 255]).max() <= 8
    assert np.abs(got[:, 40:] - [255, 0, 0]).max() <= 8


@pytest.mark.parametrize("rel", ["derived_from_real_photos/cmyk.jpg", "cmyk/pil_sample_cmyk.jpg", "cmyk/tiff_strip_cmyk_jpeg.tif"])
def test_cmyk_files_match_pillow_conversion(shared_data, rel):
    path = shared_data / "bad-inputs" / rel
    with Image.open(path) as img:
        assert img.mode == "CMYK"
        fmt = img.format
    loaded = load_image(path, NO_DRAFT, fmt)
    assert np.abs(_pixels(loaded) - _reference(path)).max() <= 1


@pytest.mark.parametrize("fmt, suffix", [("PNG", ".png"), ("GIF", ".gif")])
def test_palette_transparency_composited_on_white(tmp_path, fmt, suffix):
    img = Image.new("P", (3, 1))
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * (256 - 3) * 3)
    img.putdata([0, 1, 2])  # index 0 (black) is the transparent one
    path = tmp_path / f"p{suffix}"
    img.save(path, transparency=0)
    got = _pixels(load_image(path, NO_DRAFT, fmt))
    assert got.tolist() == [[[255, 255, 255], [255, 0, 0], [0, 0, 255]]]


def test_la_composited_on_white(tmp_path):
    img = Image.new("LA", (4, 1))
    img.putdata([(0, 0), (0, 255), (100, 255), (0, 128)])
    path = tmp_path / "la.png"
    img.save(path)
    got = _pixels(load_image(path, NO_DRAFT, "PNG"))
    assert np.abs(got - _on_white(img)).max() <= 1
    assert got[0, 0].tolist() == [255, 255, 255] and got[0, 1].tolist() == [0, 0, 0]
    assert got[0, 2].tolist() == [100, 100, 100] and abs(int(got[0, 3, 0]) - 127) <= 1


@pytest.mark.parametrize("fmt, suffix, kwargs", [("PNG", ".png", {}), ("WEBP", ".webp", {"lossless": True, "exact": True}), ("TIFF", ".tif", {})])
def test_rgba_composited_on_white(tmp_path, fmt, suffix, kwargs):
    img = Image.new("RGBA", (4, 1))
    img.putdata([(0, 0, 0, 0), (255, 0, 0, 255), (0, 0, 255, 128), (10, 200, 30, 255)])
    path = tmp_path / f"rgba{suffix}"
    img.save(path, **kwargs)
    got = _pixels(load_image(path, NO_DRAFT, fmt))
    assert got[0, 0].tolist() == [255, 255, 255]  # fully transparent black becomes white
    assert np.abs(got - _on_white(img)).max() <= 1


@pytest.mark.parametrize("mode, transparent, opaque", [("L", 0, 200), ("RGB", (0, 0, 0), (200, 10, 20))])
def test_trns_chunk_colour_composited_on_white(tmp_path, mode, transparent, opaque):
    img = Image.new(mode, (2, 1), transparent)
    img.putpixel((1, 0), opaque)
    path = tmp_path / f"trns_{mode}.png"
    img.save(path, transparency=transparent)
    got = _pixels(load_image(path, NO_DRAFT, "PNG"))
    assert got[0, 0].tolist() == [255, 255, 255]
    assert got[0, 1].tolist() == ([opaque] * 3 if mode == "L" else list(opaque))


@pytest.mark.parametrize("fmt, suffix", [("PNG", ".png"), ("BMP", ".bmp"), ("TIFF", ".tif"), ("GIF", ".gif")])
def test_bilevel(tmp_path, fmt, suffix):
    bits = (np.indices((6, 10)).sum(axis=0) % 2).astype(bool)  # checkerboard
    path = tmp_path / f"bits{suffix}"
    Image.fromarray(bits).convert("1").save(path, format=fmt)
    got = _pixels(load_image(path, NO_DRAFT, fmt))
    assert np.array_equal(got, np.repeat(np.where(bits, 255, 0)[..., None], 3, axis=2))


@pytest.mark.parametrize("fmt, suffix, kwargs", [("GIF", ".gif", {}), ("PNG", ".png", {}), ("WEBP", ".webp", {"lossless": True})])
def test_animated_gives_first_frame(tmp_path, fmt, suffix, kwargs):
    frames = [Image.new("RGB", (16, 16), colour) for colour in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    path = tmp_path / f"anim{suffix}"
    frames[0].save(path, format=fmt, save_all=True, append_images=frames[1:], duration=100, **kwargs)
    with Image.open(path) as img:
        assert getattr(img, "n_frames", 1) == 3
    got = _pixels(load_image(path, NO_DRAFT, fmt))
    assert np.abs(got - [255, 0, 0]).max() <= 2


@pytest.mark.parametrize("name", ["animated.gif", "animated.png", "animated.webp"])
def test_animated_corpus_files_give_first_frame(shared_data, name):
    path = shared_data / "bad-inputs" / "derived_from_real_photos" / name
    with Image.open(path) as img:
        assert img.n_frames > 1
        fmt = img.format
        img.seek(img.n_frames - 1)
        last = np.asarray(img.convert("RGB"), dtype=np.int16)
    got = _pixels(load_image(path, NO_DRAFT, fmt))
    first = _reference(path)
    assert np.abs(got - first).max() <= 1
    assert np.abs(got - last).mean() > 5  # the frames really differ


# -- draft() --------------------------------------------------------------------------------------


def _gradient(size: tuple[int, int]) -> Image.Image:
    w, h = size
    x = np.linspace(0, 255, w)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h)[:, None].repeat(w, 1)
    return Image.fromarray(np.stack([x, y, 255 - x], axis=2).astype(np.uint8), "RGB")


def test_draft_reduces_large_jpeg_but_reports_full_size(tmp_path):
    path = tmp_path / "big.jpg"
    _gradient((2000, 1500)).save(path, quality=90)
    loaded = load_image(path, LoadSettings(ALLOWED, 178_956_970, min_side=128), "JPEG")
    assert (loaded.width, loaded.height) == (2000, 1500)
    assert loaded.image.width < 2000 and loaded.image.height < 1500  # decoded reduced
    assert min(loaded.image.size) >= 128  # but still covers min_side
    with Image.open(path) as img:
        reference = np.asarray(img.convert("RGB").resize(loaded.image.size, Image.Resampling.BOX), dtype=np.int16)
    assert np.abs(_pixels(loaded) - reference).mean() < 4


def test_draft_with_quarter_turn_reports_displayed_size_of_near_square_jpeg(tmp_path):
    """2000x1999 drafted to 1/8 decodes 250x250: the turn must come from EXIF, not from the decoded shape."""
    path = tmp_path / "near_square_rot6.jpg"
    exif = Image.Exif()
    exif[EXIF_TAG_ORIENTATION] = 6
    _gradient((2000, 1999)).save(path, quality=90, exif=exif)
    loaded = load_image(path, LoadSettings(ALLOWED, 178_956_970, min_side=128), "JPEG")
    assert (loaded.width, loaded.height) == (1999, 2000)
    assert loaded.image.width < 1999


# -- limits and refusals ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt, suffix", [("PNG", ".png"), ("GIF", ".gif"), ("BMP", ".bmp"), ("TIFF", ".tif"), ("JPEG", ".jpg"), ("WEBP", ".webp")])
def test_pixel_limit(tmp_path, make_image, fmt, suffix):
    path = make_image(tmp_path / f"img{suffix}", size=(100, 100), color=(9, 9, 9), fmt=fmt)  # 10,000 pixels
    assert load_image(path, LoadSettings(ALLOWED, 10_000, 64), fmt).width == 100  # at the limit: fine
    # Above max_pixels but below 2x: Pillow only warns (DecompressionBombWarning); refused all the same.
    assert 9_000 < 10_000 <= 2 * 9_000
    assert _reason(path, LoadSettings(ALLOWED, 9_000, 64), fmt) == loading.DECOMPRESSION_BOMB
    assert _reason(path, LoadSettings(ALLOWED, 4_000, 64), fmt) == loading.DECOMPRESSION_BOMB  # Pillow's error


def test_format_hint_outside_allow_list_is_refused_before_opening(tmp_path):
    missing = tmp_path / "never_created.fits"
    assert _reason(missing, hint="FITS") == loading.FORMAT_NOT_ALLOWED  # not 'vanished': it never looked
    restricted = LoadSettings(("PNG",), 178_956_970, 64)
    assert _reason(missing, restricted, "JPEG") == loading.FORMAT_NOT_ALLOWED


def test_content_of_format_outside_allow_list_is_unidentified(tmp_path, make_image):
    path = make_image(tmp_path / "really_a_ppm.png", fmt="PPM")
    assert _reason(path, hint="PNG") == loading.UNIDENTIFIED


def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)
    outcome: list[BaseException | object] = []

    def _load():
        try:
            outcome.append(load_image(fifo, NO_DRAFT, "JPEG"))
        except BaseException as exc:  # noqa: BLE001 - reported below
            outcome.append(exc)

    started = time.monotonic()
    thread = threading.Thread(target=_load, daemon=True)
    thread.start()
    thread.join(timeout=2)
    if thread.is_alive():  # unblock the reader so the thread can end, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("load_image blocked on a FIFO")
    assert time.monotonic() - started < 2
    assert isinstance(outcome[0], ImageLoadError) and outcome[0].reason == loading.NOT_REGULAR


def test_vanished_file(tmp_path, make_image):
    path = make_image(tmp_path / "gone.png")
    path.unlink()
    assert _reason(path, hint="PNG") == loading.VANISHED


def test_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    assert _reason(path, hint="PNG") == loading.EMPTY_FILE


def test_directory_is_not_a_regular_file(tmp_path):
    folder = tmp_path / "folder.jpg"
    folder.mkdir()
    assert _reason(folder, hint="JPEG") == loading.NOT_REGULAR


def test_path_through_a_file_is_unreadable(tmp_path, make_image):
    parent = make_image(tmp_path / "file.png")
    assert _reason(parent / "child.png", hint="PNG") == loading.UNREADABLE  # ENOTDIR, even for root


def _outcome(path) -> str:
    try:
        load_image(path, NO_DRAFT, "PNG")
        return "ok"
    except ImageLoadError as exc:
        return exc.reason


def _outcome_without_privileges(path) -> str:
    """Load ``path`` as an unprivileged user ("ok" or the skip reason): root reads chmod-000 files, so root
    checks in a forked child dropped to uid/gid 65534 (the modules are already loaded; nothing is exec'd)."""
    if os.geteuid() != 0:
        return _outcome(path)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.setgid(65534)
            os.setuid(65534)
            os.write(write_end, _outcome(path).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    answer = os.read(read_end, 200).decode()
    os.close(read_end)
    os.waitpid(pid, 0)
    return answer


def test_permission_denied_is_unreadable(make_image):
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="imagerec-perm-")  # outside pytest's 0700 tmp tree: only the file is closed
    os.chmod(folder, 0o755)
    path = make_image(os.path.join(folder, "secret.png"))
    path.chmod(0)
    try:
        assert _outcome_without_privileges(path) == loading.UNREADABLE
        path.chmod(0o644)
        assert _outcome_without_privileges(path) == "ok"  # the same child reads it once the bits allow
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_bytes_path_is_accepted(tmp_path, make_image):
    path = make_image(tmp_path / "plain.png", color=(1, 2, 3))
    loaded = load_image(os.fsencode(path), NO_DRAFT, "PNG")
    assert _pixels(loaded)[0, 0].tolist() == [1, 2, 3]


def test_decodes_with_different_pixel_limits_in_threads_never_see_each_others_limit(tmp_path, make_image):
    """Pillow reads its bomb limit from a global: concurrent decodes with other limits must each get their own."""
    import threading

    from PIL import Image

    big = make_image(tmp_path / "big.png", size=(400, 300))  # 120,000 pixels
    strict = LoadSettings(("PNG",), 100_000, 64)
    lenient = LoadSettings(("PNG",), 10_000_000, 64)
    default = Image.MAX_IMAGE_PIXELS
    outcomes: dict[str, list[str]] = {"strict": [], "lenient": []}

    def run(name, settings):
        for _ in range(40):
            try:
                load_image(big, settings, "PNG")
                outcomes[name].append("ok")
            except ImageLoadError as exc:
                outcomes[name].append(exc.reason)

    threads = [threading.Thread(target=run, args=(name, settings))
               for name, settings in (("strict", strict), ("lenient", lenient)) * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(outcomes["strict"]) == {"decompression_bomb"} and set(outcomes["lenient"]) == {"ok"}
    assert Image.MAX_IMAGE_PIXELS == default


def test_bomb_message_names_the_configured_limit(tmp_path, make_image):
    big = make_image(tmp_path / "big.png", size=(400, 300))
    with pytest.raises(ImageLoadError) as info:
        load_image(big, LoadSettings(("PNG",), 50_000, 64), "PNG")
    assert "50,000" in info.value.detail and "100,000" not in info.value.detail
