"""The real indexer over the whole bad-inputs corpus (../shared/data/bad-inputs).

Every file is either an indexed row or a skipped row with a reason, never both and never neither,
except files whose extension Pillow has no opener for (passed over as non-image files). Expectations
come from the corpus manifest (Pillow's own verdict on each file) and from Pillow's extension table,
not from imagerec's output.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
import warnings
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from imagerec.config import load_config
from imagerec.indexing.run import index_collection

ALLOWED = {"JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP"}  # config.DEFAULT_FORMATS, restated on purpose
KNOWN_REASONS = {"empty_file", "format_not_allowed", "unidentified", "decompression_bomb", "truncated", "corrupt"}
TIME_LIMIT_S = 60  # ~3 s here; a bomb that got decoded or a hang would blow far past this

# Manifest says 'ok', but the current Pillow refuses it: keep this list minimal and justified.
EXCEPTIONS = {
    # Pillow >= 12 raises "SyntaxError: APNG contains frame sequence errors" on load (checked below).
    "animated/apng__chunk_no_fctl.png": "corrupt",
}

# derived_from_real_photos/ is not in the manifest: expected outcome per file, from the data README.
DERIVED = {
    "animated.gif": None,
    "animated.png": None,
    "animated.webp": None,
    "bilevel.png": None,
    "cmyk.jpg": None,
    "corrupted_middle.jpg": None,  # decodes without error despite damaged data: no false skip
    "exif_orientation_3.jpg": None,
    "exif_orientation_6.jpg": None,
    "exif_orientation_8.jpg": None,
    "extreme_aspect_4000x12.jpg": None,
    "gray16.png": None,
    "gray16.tif": None,
    "gray_alpha.png": None,
    "palette_transparency.gif": None,
    "palette_transparency.png": None,
    "png_pixel_flood_30000x30000.png": "decompression_bomb",
    "progressive.jpg": None,
    "random_bytes.png": "unidentified",
    "rgba.webp": None,
    "rgba_gradient_alpha.png": None,
    "text_named_as.jpg": "unidentified",
    "tiny_8x8.jpg": None,
    "truncated_50pct.jpg": "truncated",
    "truncated_header_only.jpg": "truncated",  # Pillow: "OSError: Truncated File Read" already on open
    "zero_bytes.jpg": "empty_file",
}
INDEXED = None  # DERIVED / expectation value meaning "an image row"


def _extension_formats() -> dict[str, str]:
    """Pillow's own extension → format table, restricted to formats it can open."""
    Image.init()
    return {ext.lower(): fmt for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


def _reason_from_pillow_error(error: str) -> str:
    """The skip reason a Pillow error (as written in the manifest) should map to."""
    if error.startswith("DecompressionBombError"):
        return "decompression_bomb"
    if error.startswith("UnidentifiedImageError"):
        return "unidentified"
    if "truncated" in error.lower():
        return "truncated"
    return "corrupt"


def _expected(root: Path) -> tuple[dict[str, str | None], set[str]]:
    """(rel path → None for indexed or the skip reason; rel paths of non-image files)."""
    extensions = _extension_formats()
    manifest = json.loads((root / "manifest.json").read_text())
    expected: dict[str, str | None] = {}
    for entry in manifest:
        path = entry["path"]
        ext_format = extensions.get(os.path.splitext(path)[1].lower())
        if ext_format is None:
            continue  # no Pillow opener for the extension: a non-image file, checked separately
        if ext_format not in ALLOWED:
            # e.g. .j2k/.fits/.ico/.icns, and gray_or_bilevel/courB08.pbm (a PNG named .pbm: the
            # extension says PPM, so it is refused before any decoder sees it)
            expected[path] = "format_not_allowed"
        elif path in EXCEPTIONS:
            expected[path] = EXCEPTIONS[path]
        elif entry["status"] == "error":
            expected[path] = _reason_from_pillow_error(entry["error"])
        elif entry["format"] in ALLOWED:
            expected[path] = INDEXED
        else:  # content of a non-allowed format behind an allowed extension: Image.open(formats=...) refuses
            expected[path] = "unidentified"
    for name, outcome in DERIVED.items():
        expected[f"derived_from_real_photos/{name}"] = outcome
    every_file = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    non_images = {p for p in every_file if os.path.splitext(p)[1].lower() not in extensions}
    return expected, non_images


def _read_store(db_path: Path):
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        images = {
            row[0].decode(): row[1:]
            for row in db.execute(
                "SELECT i.path, i.format, i.width, i.height, e.model_id, length(e.vector) "
                "FROM images i LEFT JOIN embeddings e ON e.image_id = i.id"
            )
        }
        skipped = {row[0].decode(): (row[1], row[2], row[3]) for row in db.execute("SELECT path, reason, detail, recorded_at FROM skipped")}
        version = db.execute("SELECT value FROM meta WHERE key = 'data_version'").fetchone()[0]
    finally:
        db.close()
    return images, skipped, version


def _pillow_reference(path: Path) -> tuple[str, tuple[int, int]]:
    """(format, displayed size) from a full Pillow decode with EXIF orientation applied."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Invalid APNG", "Corrupt EXIF data": Pillow still decodes them
        with Image.open(path) as img:
            return img.format, ImageOps.exif_transpose(img).size


def _check_outcomes(root: Path, images: dict, skipped: dict, non_image_count: int) -> None:
    expected, non_images = _expected(root)
    problems = []
    both = set(images) & set(skipped)
    if both:
        problems.append(f"both indexed and skipped: {sorted(both)}")
    for path, want in sorted(expected.items()):
        if path in images and path in skipped:
            continue
        got = INDEXED if path in images else skipped[path][0] if path in skipped else "MISSING"
        if got != want:
            detail = skipped[path][1] if path in skipped else ""
            problems.append(f"{path}: expected {want or 'indexed'}, got {got or 'indexed'} {detail}")
    unexpected = (set(images) | set(skipped)) - set(expected)
    if unexpected:
        problems.append(f"rows for files the test does not know about: {sorted(unexpected)}")
    assert not problems, "\n".join(problems)

    assert {reason for reason, _, _ in skipped.values()} <= KNOWN_REASONS
    # The MCIDAS file (.ara) opens in Pillow (manifest: ok) but no opener claims its extension, so it is
    # passed over as a non-image file: counted by the scan, recorded nowhere.
    ara = "16bit/cmx3g8_wv_1998.260_0745_mcidas.ara"
    assert ara in non_images and ara not in images and ara not in skipped
    assert non_images == {ara, "manifest.json"}
    assert non_image_count == len(non_images)

    # Indexed rows carry the displayed (EXIF-oriented) full size and the format Pillow detects.
    wrong = []
    for path, (fmt, width, height, _, _) in images.items():
        reference = _pillow_reference(root / path)
        if (fmt, (width, height)) != reference:
            wrong.append(f"{path}: stored {fmt} {width}x{height}, Pillow {reference}")
    assert not wrong, "\n".join(wrong)


def _index(config_path: Path):
    started = time.monotonic()
    summary = index_collection(load_config(config_path))
    return summary, time.monotonic() - started


def test_exceptions_still_hold_with_current_pillow(shared_data):
    """Each entry of EXCEPTIONS is still refused by Pillow itself (otherwise drop it from the list)."""
    root = shared_data / "bad-inputs"
    manifest = {e["path"]: e for e in json.loads((root / "manifest.json").read_text())}
    for path in EXCEPTIONS:
        assert manifest[path]["status"] == "ok"
        with Image.open(root / path) as img:
            with pytest.raises(SyntaxError, match="APNG contains frame sequence errors"):
                img.load()
    # The header-only JPEG fails in Image.open already, with a truncation message.
    with pytest.raises(OSError, match="(?i)truncated"):
        Image.open(root / "derived_from_real_photos/truncated_header_only.jpg")
    # corrupted_middle.jpg really decodes without error (so skipping it would be a false skip).
    with Image.open(root / "derived_from_real_photos/corrupted_middle.jpg") as img:
        ImageOps.exif_transpose(img).convert("RGB")


def test_derived_folder_is_fully_listed(shared_data):
    folder = shared_data / "bad-inputs" / "derived_from_real_photos"
    assert {p.name for p in folder.iterdir()} == set(DERIVED)


@pytest.mark.parametrize("with_model", [False, True], ids=["no_model", "tiny_model"])
def test_every_bad_input_is_indexed_or_skipped_with_reason(shared_data, write_config, tiny_model_file, tmp_path, capfd, with_model):
    root = shared_data / "bad-inputs"
    out = tmp_path / "out"
    out.mkdir()
    if with_model:
        shutil.copy(tiny_model_file, out / "embedding_model.pt")
    # one torch thread: on a busy 2-core machine the default (CPU count) makes embedding ~15x slower
    config = write_config(root, out, runtime={"device": "cpu", "threads": 1})

    summary, elapsed = _index(config)
    assert elapsed < TIME_LIMIT_S
    assert not summary.interrupted and summary.vanished == 0
    assert summary.model_missing is not with_model
    images, skipped, version = _read_store(out / "images.db")
    _check_outcomes(root, images, skipped, summary.scan.non_image_files)
    assert summary.indexed == len(images)
    assert sum(summary.skipped.values()) == len(skipped)
    assert dict(summary.skipped) == {r: sum(1 for s in skipped.values() if s[0] == r) for r in summary.skipped}

    if with_model:  # every image row has an embedding from this model
        assert summary.model_id
        assert {row[3] for row in images.values()} == {summary.model_id}
        assert len({row[4] for row in images.values()}) == 1 and next(iter(images.values()))[4] > 0
    else:
        assert all(row[3] is None for row in images.values())

    # A second run finds everything unchanged or skipped-known and decodes (and writes) nothing.
    again, elapsed = _index(config)
    assert elapsed < TIME_LIMIT_S
    assert again.unchanged == len(images)
    assert again.skipped_known == len(skipped)
    assert again.processed == 0 and again.indexed == again.updated == again.embedded == 0
    assert not again.skipped and again.removed == 0 and again.vanished == 0
    assert _read_store(out / "images.db") == (images, skipped, version)  # same rows, same recorded_at

    captured = capfd.readouterr()
    assert "Traceback" not in captured.out + captured.err
