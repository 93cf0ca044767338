"""Shared fixtures: tiny generated images, config files, a small random model, real-data locations."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("IMAGEREC_SHARED_DATA", REPO.parent / "shared" / "data"))
SAMPLE_DIR = REPO / "sample" / "caltech101-mini"
TINY_MODEL_SIZE = 32  # input size of the random test model: keeps CPU inference fast


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder (../shared/data). Missing data is an error, not a skip."""
    assert SHARED_DATA.is_dir(), f"real test data not found at {SHARED_DATA} (set IMAGEREC_SHARED_DATA)"
    return SHARED_DATA


@pytest.fixture
def make_image():
    """Write a small generated image: make_image(path, size=(w, h), color=(r, g, b) or None=noise, fmt=...)."""

    def _make(path: Path, size=(64, 48), color=None, mode="RGB", fmt=None, seed=0, **save_kwargs) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if color is None:
            rng = np.random.default_rng(seed)
            pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
            img = Image.fromarray(pixels, "RGB")
        else:
            img = Image.new("RGB", size, color)
        if mode != "RGB":
            img = img.convert(mode)
        img.save(path, format=fmt, **save_kwargs)
        return path

    return _make


@pytest.fixture
def write_config(tmp_path):
    """Write a YAML config into tmp_path and return its path: write_config(image_root, **sections)."""

    def _write(image_root: Path, output_dir: Path | None = None, **sections) -> Path:
        raw = {"data": {"image_root": str(image_root)}, "output": {"dir": str(output_dir or tmp_path / "out")},
               "model": {"arch": "resnet18", "init": "random"}}
        raw["index"] = {"workers": 2, "batch_size": 16, **sections.pop("index", {})}
        raw.update(sections)
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(raw))
        return path

    return _write


@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory) -> Path:
    """A randomly initialised model file at a small input size (shared, read-only)."""
    from imagerec.embed.files import ModelSpec, write_random_model

    path = tmp_path_factory.mktemp("model") / "embedding_model.pt"
    write_random_model(path, ModelSpec(image_size=TINY_MODEL_SIZE), seed=0)
    return path
