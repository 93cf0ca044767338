"""The same-photo tier: real photo files, real decodes, the re-ordering rule."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imagerec.data.thumbnails import Thumbnails
from imagerec.search.fusion import QueryImage
from imagerec.search.match import grey_thumbnail
from imagerec.search.verify import SamePhotoSettings, SamePhotoTier

SAMPLE_DIR = Path(__file__).resolve().parents[3] / "sample" / "caltech101-mini"


@pytest.fixture
def collection(tmp_path) -> tuple[Path, list[bytes]]:
    """Six sample photos of three classes copied into a collection folder; their stored relative paths."""
    tmp_path = tmp_path / "photos"
    tmp_path.mkdir()
    rels = []
    for name in ("airplanes", "watch", "bonsai"):
        for source in sorted((SAMPLE_DIR / name).glob("*.jpg"))[:2]:
            shutil.copy(source, tmp_path / f"{name}_{source.name}")
            rels.append(f"{name}_{source.name}".encode())
    return tmp_path, rels


IDS = np.arange(100, 106)  # the candidates' image ids


def _tier(root: Path, top: int = 3, least: float = 0.96, cache: Path | None = None) -> SamePhotoTier:
    cache = cache or root.parent / "thumbs"
    thumbnails = Thumbnails(cache, ("JPEG", "PNG"), 10**8, (128, 256))
    return SamePhotoTier(SamePhotoSettings(top, least), root, thumbnails)


def _cropped_query(path: Path, rel: bytes | None = None) -> QueryImage:
    with Image.open(path) as img:
        w, h = img.size
        crop = img.convert("RGB").crop((w // 10, h // 10, w - w // 10, h - h // 10))  # 64 % of the area
    return QueryImage("crop", np.zeros(4, np.float32), np.zeros(8, np.float32), 0, thumbnail=grey_thumbnail(crop))


def test_the_source_photo_moves_first_and_the_rest_keep_their_order(collection):
    root, rels = collection
    query = _cropped_query(root / rels[2].decode())
    order, matches = _tier(root).reorder([query], np.arange(6), IDS, rels)
    assert order.tolist() == [2, 0, 1, 3, 4, 5]
    assert set(matches) == {0, 1, 2} and matches[2] >= 0.96 and max(matches[0], matches[1]) < 0.9


def test_only_the_top_candidates_are_checked(collection):
    root, rels = collection
    query = _cropped_query(root / rels[2].decode())
    order, matches = _tier(root, top=2).reorder([query], np.arange(6), IDS, rels)
    assert order.tolist() == list(range(6)) and set(matches) == {0, 1}
    order, matches = _tier(root, top=0).reorder([query], np.arange(6), IDS, rels)
    assert order.tolist() == list(range(6)) and matches == {}


def test_below_the_threshold_nothing_moves(collection):
    root, rels = collection
    query = _cropped_query(root / rels[2].decode())
    order, matches = _tier(root, least=1.0).reorder([query], np.arange(6), IDS, rels)
    assert order.tolist() == list(range(6)) and matches[2] >= 0.96


def test_a_vanished_or_broken_candidate_is_not_checked(collection):
    root, rels = collection
    query = _cropped_query(root / rels[2].decode())
    (root / rels[2].decode()).unlink()
    (root / rels[1].decode()).write_bytes(b"\xff\xd8\xff not a jpeg any more")
    order, matches = _tier(root).reorder([query], np.arange(6), IDS, rels)
    assert order.tolist() == list(range(6)) and set(matches) == {0}


def test_a_stored_query_is_read_from_its_file(collection):
    root, rels = collection
    stored = QueryImage("id 104", np.zeros(4, np.float32), np.zeros(8, np.float32), 0, image_id=104, rel_path=rels[4])
    order, matches = _tier(root).reorder([stored], np.array([0, 4, 1]), IDS, rels)
    assert order.tolist() == [4, 0, 1] and matches[4] == pytest.approx(1.0, abs=1e-6)
    gone = QueryImage("id 9", np.zeros(4, np.float32), np.zeros(8, np.float32), 0, image_id=9, rel_path=b"missing.jpg")
    order, matches = _tier(root).reorder([gone], np.array([0, 4, 1]), IDS, rels)
    assert order.tolist() == [0, 4, 1] and matches == {}


def test_candidate_thumbnails_are_cached_and_a_read_only_cache_falls_back_to_decoding(collection, tmp_path):
    root, rels = collection
    query = _cropped_query(root / rels[2].decode())
    cache = tmp_path / "thumbs"
    order, matches = _tier(root, cache=cache).reorder([query], np.arange(6), IDS, rels)
    made = sorted(p.name for p in cache.rglob("*.jpg"))
    assert len(made) == 3 and all(name.startswith(("100-128-", "101-128-", "102-128-")) for name in made)
    again = _tier(root, cache=cache).reorder([query], np.arange(6), IDS, rels)  # served from the cache now
    assert again[0].tolist() == order.tolist() == [2, 0, 1, 3, 4, 5]
    assert again[1] == pytest.approx(matches, abs=1e-9)
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder would be")
    direct = _tier(root, cache=blocked / "thumbs").reorder([query], np.arange(6), IDS, rels)
    assert direct[0].tolist() == [2, 0, 1, 3, 4, 5] and direct[1][2] >= 0.96
