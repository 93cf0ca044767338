"""The README's Python example runs as written, on a copy of the bundled sample."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import yaml

import imagerec
from ann_support import REPO, SAMPLE_DIR

EXAMPLE = re.compile(r"<!-- api-example -->\s*```python\n(.*?)```", re.S)


def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    code = EXAMPLE.search((REPO / "README.md").read_text(encoding="utf-8")).group(1)
    root = tmp_path / "photos"
    for folder in sorted(SAMPLE_DIR.iterdir())[:4]:
        shutil.copytree(folder, root / folder.name)
    shutil.copy(next(root.rglob("*.jpg")), tmp_path / "photo.jpg")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({
        "data": {"image_root": "photos"}, "output": {"dir": "out"},
        "index": {"workers": 2}, "runtime": {"threads": 2}, "model": {"arch": "resnet18", "init": "random"},
        "train": {"epochs": 1, "image_size": 32, "batch_size": 32, "max_images": 64},
    }))
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"__name__": "__main__"})
    printed = capsys.readouterr().out
    assert "images" in printed and str(tmp_path / "photos") in printed  # results carry absolute paths

    col = imagerec.open(tmp_path / "config.yaml")
    results = col.similar(ids=[12], k=5)
    assert [r.rank for r in results] == [1, 2, 3, 4, 5] and 12 not in [r.id for r in results]
    assert all(Path(r.path).is_absolute() and set(r.scores) == {"embedding", "color", "dhash"} for r in results)
    col.close()


def test_no_exported_name_is_shadowed_by_a_submodule():
    import importlib
    import pkgutil

    for info in pkgutil.walk_packages(imagerec.__path__, "imagerec."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    for name in imagerec.__all__:
        value = getattr(imagerec, name)
        assert not isinstance(value, type(imagerec)), f"imagerec.{name} is a module"
    assert callable(imagerec.status) and callable(imagerec.index) and callable(imagerec.open)
