"""Helpers shared by test_ann.py, test_query.py and test_render_viz_profile.py (imported, not a conftest).

``sample_collection()`` indexes the bundled real sample (300 photos, 10 folders) with the tiny random
model once per test session and builds its ANN index; tests that change a collection make their own.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DIR = REPO / "sample" / "caltech101-mini"

_CACHE: dict[str, "Collection"] = {}


@dataclass
class Collection:
    root: Path
    out: Path
    config_path: Path

    def config(self, **overrides):
        from imagerec.config import load_config

        config = load_config(self.config_path)
        return config.with_overrides(overrides) if overrides else config


def write_collection_config(base: Path, root: Path, model_file: Path, **sections) -> Collection:
    out = base / "out"
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(model_file, out / "embedding_model.pt")
    raw = {"data": {"image_root": str(root)}, "output": {"dir": str(out)},
           "index": {"workers": 2, "batch_size": 64}, "runtime": {"threads": 2}, "ann": {"threads": 2}, "model": {"arch": "resnet18", "init": "random"}}
    for key, value in sections.items():
        raw.setdefault(key, {}).update(value)
    path = base / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return Collection(root, out, path)


def index_and_build(collection: Collection) -> None:
    from imagerec.ann import build_ann
    from imagerec.indexing.run import index_collection

    config = collection.config()
    index_collection(config)
    build_ann(config)


def sample_collection(tmp_path_factory, model_file: Path) -> Collection:
    """The real sample, indexed with the tiny model, ANN built (shared; do not modify)."""
    if "sample" not in _CACHE:
        base = tmp_path_factory.mktemp("sample_collection")
        collection = write_collection_config(base, SAMPLE_DIR, model_file)
        index_and_build(collection)
        _CACHE["sample"] = collection
    return _CACHE["sample"]


def run_cli(config_path: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """The real CLI in a subprocess (so a crash would show as a signal, not kill pytest)."""
    return subprocess.run([sys.executable, "-m", "imagerec", "--config", str(config_path), *args],
                          capture_output=True, text=True, timeout=timeout)
