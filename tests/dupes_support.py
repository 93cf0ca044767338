"""Folders with known duplicates, made on the fly from the bundled sample photos (for the duplicates tests)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageEnhance

from ann_support import SAMPLE_DIR

SOURCES = {  # name -> sample photo; every one of a different class
    "a": "Leopards/image_0002.jpg", "b": "Motorbikes/image_0002.jpg", "c": "sunflower/image_0001.jpg",
    "d": "car_side/image_0001.jpg", "e": "bonsai/image_0002.jpg", "f": "ketch/image_0001.jpg",
    "g": "chandelier/image_0001.jpg", "h": "watch/image_0001.jpg", "i": "airplanes/image_0001.jpg",
}
CHAIN = 16  # d blended into e in this many steps: neighbours are alike, the ends are not


def _photo(name: str) -> Image.Image:
    with Image.open(SAMPLE_DIR / SOURCES[name]) as im:
        return im.convert("RGB")


def make_folder(root: Path) -> Path:
    """Originals, an exact copy of a, edited copies of b, c's pixels shuffled (same colours), a blend chain d → e."""
    for name, rel in SOURCES.items():
        (root / "orig").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SAMPLE_DIR / rel, root / "orig" / f"{name}.jpg")
    (root / "copies").mkdir()
    shutil.copyfile(SAMPLE_DIR / SOURCES["a"], root / "copies" / "a_copy.jpg")
    b = _photo("b")
    b.resize((b.width // 2, b.height // 2), Image.Resampling.LANCZOS).save(root / "copies" / "b_half.jpg", quality=90)
    b.save(root / "copies" / "b_q30.jpg", quality=30)
    ImageEnhance.Brightness(b).enhance(1.2).save(root / "copies" / "b_bright.png")
    c = np.asarray(_photo("c"))
    shuffled = np.random.default_rng(0).permutation(c.reshape(-1, 3)).reshape(c.shape)
    Image.fromarray(shuffled).save(root / "copies" / "c_same_colours.png")
    d, e = _photo("d"), _photo("e").resize(_photo("d").size)
    (root / "chain").mkdir()
    for step in range(1, CHAIN):
        Image.blend(d, e, step / CHAIN).save(root / "chain" / f"d_to_e_{step}.png")
    return root


def write_config(base: Path, root: Path, **model) -> Path:
    raw = {"data": {"image_root": str(root)}, "output": {"dir": str(base / "out")}, "runtime": {"threads": 2, "inference": "torch"},
           "index": {"workers": 2}, **({"model": model} if model else {})}
    path = base / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path
