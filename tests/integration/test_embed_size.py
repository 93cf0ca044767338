"""``model.embed_size``: a trained model file embeds the collection at another input size than it was trained at.

Real photos from the sample, the tiny random model file (32 px), the real CLI in a subprocess.
"""

from __future__ import annotations

import json
import shutil

import yaml

from ann_support import SAMPLE_DIR, run_cli, write_collection_config
from imagerec.embed.files import load_model


def _status(config_path) -> dict:
    done = run_cli(config_path, "status", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_embed_size_re_embeds_the_collection_under_the_model_id_of_that_size(tmp_path, tiny_model_file):
    root = tmp_path / "photos"
    for folder in ("Leopards", "watch"):
        (root / folder).mkdir(parents=True)
        for path in sorted((SAMPLE_DIR / folder).glob("*.jpg"))[:6]:
            shutil.copy(path, root / folder / path.name)
    collection = write_collection_config(tmp_path, root, tiny_model_file)
    assert run_cli(collection.config_path, "index", "-q").returncode == 0
    trained = load_model(tiny_model_file)
    assert _status(collection.config_path)["model_id"] == trained.model_id

    raw = yaml.safe_load(collection.config_path.read_text())
    raw["model"]["embed_size"] = 2 * trained.spec.image_size
    collection.config_path.write_text(yaml.safe_dump(raw))
    again = run_cli(collection.config_path, "index", "-q")
    assert again.returncode == 0, again.stderr
    assert "12 embeddings added" in again.stdout  # every photo re-embedded at the new size
    status = _status(collection.config_path)
    larger = load_model(tiny_model_file, embed_size=2 * trained.spec.image_size)
    assert status["model_id"] == larger.model_id != trained.model_id and status["with_embedding"] == 12
    assert run_cli(collection.config_path, "index", "-q").stdout.count("0 embeddings added") == 1  # and only once
    assert run_cli(collection.config_path, "build-ann").returncode == 0
    query = run_cli(collection.config_path, "query", "--image", str(root / "watch" / sorted(
        p.name for p in (root / "watch").iterdir())[0]), "--top-k", "3", "--json")
    assert query.returncode == 0 and len(json.loads(query.stdout)) == 3
