"""HEIC/HEIF (real phone files) and AVIF are scanned, decoded with orientation applied, and held to the same rules."""

from __future__ import annotations

import shutil
import sqlite3

import pytest
import yaml
from PIL import Image

from ann_support import run_cli
from imagerec.config import DEFAULT_FORMATS
from imagerec.data import loading
from imagerec.data.loading import LoadSettings, load_image
from imagerec.data.scan import scan_images
from imagerec.errors import ImageLoadError

IPHONE = "mobile/iphone_13_pro_max.HEIC"  # stored landscape 4032x3024 with a 90° turn: displayed portrait


@pytest.fixture
def heic_root(tmp_path, shared_data):
    source = shared_data / "camera-samples" / "heic"
    files = sorted(p for p in source.rglob("*") if p.is_file())
    assert len(files) >= 5, files
    root = tmp_path / "photos"
    shutil.copytree(source, root)
    img = Image.new("RGB", (64, 48), (200, 10, 10))
    exif = img.getexif()
    exif[0x0112] = 6  # orientation: turn 90°
    img.save(root / "turned.avif", exif=exif)
    return root


def _config(tmp_path, root, **index):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"data": {"image_root": str(root)}, "output": {"dir": str(tmp_path / "out")},
                                    "index": {"workers": 2, **index}, "model": {"arch": "resnet18", "init": "random"}}))
    return path


def test_the_scan_yields_heic_heif_and_avif(heic_root):
    hints = {f.rel_path: f.format_hint for f in scan_images(heic_root)}
    assert hints == {b"IMG_5195.HEIC": "HEIF", b"samplefilehub.heif": "HEIF", b"mobile/HMD_Nokia_8.3_5G.heif": "HEIF",
                     b"mobile/HMD_Nokia_8.3_5G_hdr.heif": "HEIF", IPHONE.encode(): "HEIF", b"turned.avif": "AVIF"}
    assert {"HEIF", "AVIF"} <= set(DEFAULT_FORMATS)


def test_index_reads_every_real_heic_file_upright(tmp_path, heic_root):
    done = run_cli(_config(tmp_path, heic_root), "index", "-q")
    assert done.returncode == 0 and "indexed 6 new" in done.stdout and "skipped 0" in done.stdout, done.stdout + done.stderr
    with sqlite3.connect(tmp_path / "out" / "images.db") as con:
        sizes = {p: (w, h, f) for p, w, h, f in con.execute("SELECT path, width, height, format FROM images")}
    assert sizes[IPHONE.encode()] == (3024, 4032, "HEIF")  # turned once, not twice
    assert sizes[b"turned.avif"] == (48, 64, "AVIF")  # EXIF orientation applied


def test_heif_outside_the_allow_list_is_refused_before_any_decoder(tmp_path, heic_root):
    done = run_cli(_config(tmp_path, heic_root, formats=["JPEG", "PNG"]), "index", "-q")
    assert done.returncode == 0 and "6 format_not_allowed" in done.stdout, done.stdout + done.stderr


def test_the_pixel_limit_holds_for_heif_and_avif(heic_root):
    for name, fmt in [(IPHONE, "HEIF"), ("turned.avif", "AVIF")]:
        with pytest.raises(ImageLoadError) as info:
            load_image(heic_root / name, LoadSettings(DEFAULT_FORMATS, max_pixels=1_000, min_side=64), fmt)
        assert info.value.reason == loading.DECOMPRESSION_BOMB and "1,000" in info.value.detail
