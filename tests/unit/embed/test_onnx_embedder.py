"""The ONNX Runtime embedder: the same outputs as torch, exported once per model id, a damaged export
replaced, and torch used (with a note) when the graph cannot be trusted."""

from __future__ import annotations

import numpy as np
import pytest

from imagerec.embed import ModelChoice, TorchEmbedder, load_chosen_embedder, load_model, pretrained_model, write_random_model
from imagerec.embed.files import ModelSpec
from imagerec.embed.onnx_embedder import OnnxEmbedder, onnx_embedder


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "m.pt"
    write_random_model(path, ModelSpec(image_size=32), seed=4)
    return load_model(path)


def _batch(n: int, size: int) -> np.ndarray:
    return np.random.default_rng(n).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize("arch, size", [("resnet18", 32), ("efficientnet_lite0", 96)])
def test_onnx_outputs_equal_torch_within_1e_4(tmp_path, model, arch, size):
    chosen = model if arch == "resnet18" else pretrained_model(arch, size)
    onnx = onnx_embedder(chosen, tmp_path, threads=2)
    assert isinstance(onnx, OnnxEmbedder) and onnx.model_id == chosen.model_id and onnx.dim == chosen.spec.embedding_dim
    batch = _batch(19, size)  # not a multiple of anything
    got, want = onnx.embed(batch), TorchEmbedder(chosen).embed(batch)
    assert got.shape == want.shape == (19, chosen.spec.embedding_dim) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert onnx.embed(batch[:0]).shape == (0, chosen.spec.embedding_dim)


def test_export_is_cached_by_model_id_and_a_damaged_one_is_replaced(tmp_path, model):
    onnx_embedder(model, tmp_path, threads=1)
    exported = tmp_path / "onnx" / f"{model.model_id}.onnx"
    stamp = exported.stat().st_mtime_ns
    onnx_embedder(model, tmp_path, threads=1)
    assert exported.stat().st_mtime_ns == stamp  # reused, not exported again
    exported.write_bytes(b"not an onnx graph")
    notes = []
    again = onnx_embedder(model, tmp_path, threads=1, say=notes.append)
    assert isinstance(again, OnnxEmbedder) and notes == [] and exported.stat().st_size > 1000
    assert list((tmp_path / "onnx").glob("*.tmp")) == []


def test_torch_is_used_when_asked_or_when_the_graph_differs(tmp_path, model, monkeypatch):
    (tmp_path / "out").mkdir()
    model_path = tmp_path / "out" / "embedding_model.pt"
    write_random_model(model_path, ModelSpec(image_size=32), seed=4)
    choice = ModelChoice(model_path, "resnet18", "random", 96, "torch", tmp_path / "cache")
    assert isinstance(load_chosen_embedder(choice, device="cpu"), TorchEmbedder)
    auto = ModelChoice(model_path, "resnet18", "random", 96, "auto", tmp_path / "cache")
    assert isinstance(load_chosen_embedder(auto, device="cpu", threads=1), OnnxEmbedder)

    import imagerec.embed.onnx_embedder as module

    monkeypatch.setattr(module, "TOLERANCE", -1.0)  # no graph can pass: the fallback must take over
    notes = []
    fallback = onnx_embedder(model, tmp_path, threads=1, say=notes.append)
    assert isinstance(fallback, TorchEmbedder) and "differs from torch" in notes[0]
