"""Embedding model file format, architecture registry, loader checks, device choice, threads and
batched inference (small inputs, CPU)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from imagerec.embed import Embedder, TorchEmbedder, load_embedder, set_torch_threads
from imagerec.embed.base import Architecture, architecture, architectures, register_architecture
from imagerec.embed.files import (
    FORMAT_VERSION,
    MODEL_FORMAT,
    ModelSpec,
    build_backbone,
    compute_model_id,
    load_model,
    save_model,
    write_random_model,
)
from imagerec.embed.device import select_device
from imagerec.errors import ModelFileError

SIZE = 32  # tiny inputs keep CPU inference fast
THREADS = 1  # the test machine is shared


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """This module's stage edge: one torch thread, restored afterwards."""
    before = torch.get_num_threads()
    set_torch_threads(THREADS)
    yield
    torch.set_num_threads(before)


def _images(n: int, seed: int = 0, size: int = SIZE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def _embedder(path: Path) -> TorchEmbedder:
    return load_embedder(path, device="cpu")


@pytest.fixture(scope="module")
def model_files(tiny_model_file, tmp_path_factory):
    """Two random models (seeds 0 and 1) and a second write of seed 0 (a.pt is conftest's tiny model)."""
    assert torch.load(tiny_model_file, weights_only=True)["spec"]["image_size"] == SIZE
    folder = tmp_path_factory.mktemp("models")
    shutil.copyfile(tiny_model_file, folder / "a.pt")
    ids = {"a": torch.load(folder / "a.pt", weights_only=True)["model_id"]}
    spec = ModelSpec(image_size=SIZE)
    ids |= {name: write_random_model(folder / f"{name}.pt", spec, seed=seed) for name, seed in (("a_again", 0), ("b", 1))}
    return folder, ids


@pytest.fixture(scope="module")
def payload(model_files):
    folder, _ = model_files
    return torch.load(folder / "a.pt", map_location="cpu", weights_only=True)


def _save_payload(tmp_path: Path, payload: dict, name: str = "m.pt") -> Path:
    path = tmp_path / name
    torch.save(payload, path)
    return path


def _expect_error(path: Path, *words: str) -> str:
    with pytest.raises(ModelFileError) as info:
        load_model(path)
    message = str(info.value)
    assert str(path) in message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert info.value.__cause__ is None
    return message


@pytest.fixture(scope="module")
def embedder(model_files):
    folder, _ = model_files
    return _embedder(folder / "a.pt")


# -- file format and ids ------------------------------------------------------------------------


def test_file_layout(payload, model_files):
    _, ids = model_files
    assert payload["format"] == MODEL_FORMAT and payload["format_version"] == FORMAT_VERSION
    assert payload["spec"]["image_size"] == SIZE and payload["spec"]["stem"] == "imagenet"
    assert payload["model_id"] == ids["a"]
    assert len(ids["a"]) == 16 and int(ids["a"], 16) >= 0  # 16 hex chars
    assert not any(k.startswith("fc.") for k in payload["state_dict"])  # no classifier
    assert payload["info"]["trainer"] == "random-init" and payload["info"]["seed"] == 0


def test_model_id_depends_on_weights_only(model_files):
    _, ids = model_files
    assert ids["a"] == ids["a_again"]  # same seed, same weights, same id
    assert ids["a"] != ids["b"]  # different weights


def test_model_id_depends_on_spec(payload):
    weights = payload["state_dict"]
    spec = ModelSpec.from_dict(payload["spec"])
    assert compute_model_id(spec, weights) == payload["model_id"]
    assert compute_model_id(ModelSpec(image_size=48), weights) != payload["model_id"]
    assert compute_model_id(ModelSpec(image_size=SIZE, mean=(0.5, 0.5, 0.5)), weights) != payload["model_id"]


def test_round_trip_gives_identical_embeddings_and_id(tmp_path):
    spec = ModelSpec(image_size=SIZE)
    torch.manual_seed(123)
    net = build_backbone(spec).eval()
    model_id = save_model(tmp_path / "m.pt", net, spec, {"trainer": "test"})
    images = _images(3)
    # embeddings computed by hand from the in-memory network: scale to [0,1], normalise, run, L2-normalise
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    x = (x - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(spec.std).view(1, 3, 1, 1)
    with torch.no_grad():
        raw = net(x)
    expected = (raw / raw.norm(dim=1, keepdim=True)).numpy()
    loaded = load_model(tmp_path / "m.pt")
    assert loaded.model_id == model_id
    assert loaded.spec == spec
    assert loaded.info["trainer"] == "test" and "created" in loaded.info
    assert not loaded.backbone.training
    for name, tensor in net.state_dict().items():
        assert torch.equal(tensor, loaded.backbone.state_dict()[name]), name
    got = TorchEmbedder(loaded, torch.device("cpu")).embed(images)
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_embed_size_feeds_the_same_weights_larger_inputs_under_a_new_id(model_files, embedder, tmp_path):
    folder, ids = model_files
    larger = load_model(folder / "a.pt", embed_size=2 * SIZE)
    assert larger.spec.image_size == 2 * SIZE and larger.model_id not in ids.values()
    assert larger.model_id == compute_model_id(larger.spec, larger.backbone.state_dict())
    assert load_model(folder / "a.pt", embed_size=SIZE).model_id == ids["a"]  # its own size: the file's id
    for name, tensor in embedder.model.backbone.state_dict().items():
        assert torch.equal(tensor, larger.backbone.state_dict()[name]), name
    at_double = TorchEmbedder(larger, torch.device("cpu"))
    assert at_double.input_size == 2 * SIZE and at_double.preprocess.input_size == 2 * SIZE
    images = _images(2, seed=3, size=2 * SIZE)
    small = images[:, ::2, ::2]  # the same pictures at the training size: close, not equal, embeddings
    cosine = (at_double.embed(images) * embedder.embed(np.ascontiguousarray(small))).sum(axis=1)
    assert at_double.embed(images).shape == (2, embedder.dim) and (cosine < 0.9999).all()
    damaged = torch.load(folder / "a.pt", weights_only=True)
    damaged["model_id"] = "0" * 16
    with pytest.raises(ModelFileError, match="model id check failed"):
        load_model(_save_payload(tmp_path, damaged), embed_size=2 * SIZE)  # checked against the file's own spec


def test_write_random_model_reload_gives_identical_embeddings(model_files, embedder):
    folder, ids = model_files
    images = _images(2, seed=5)
    a, a_again, b = embedder, _embedder(folder / "a_again.pt"), _embedder(folder / "b.pt")
    assert a.model_id == ids["a"] == a_again.model_id
    np.testing.assert_array_equal(a.embed(images), a_again.embed(images))
    assert not np.allclose(a.embed(images), b.embed(images), atol=1e-3)


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path):
    torch.manual_seed(0)
    spec = ModelSpec(image_size=SIZE)
    first = save_model(tmp_path / "m.pt", build_backbone(spec), spec)
    torch.manual_seed(1)
    second = save_model(tmp_path / "m.pt", build_backbone(spec), spec)  # overwrite in place
    assert load_model(tmp_path / "m.pt").model_id == second != first
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


# -- damaged and foreign files ------------------------------------------------------------------


def test_missing_file(tmp_path):
    _expect_error(tmp_path / "nope.pt", "not found")


def test_empty_file(tmp_path):
    (tmp_path / "m.pt").write_bytes(b"")
    _expect_error(tmp_path / "m.pt", "corrupt")


@pytest.mark.parametrize("fraction", [0.01, 0.5, 0.999])
def test_truncated_file(tmp_path, model_files, fraction):
    folder, _ = model_files
    data = (folder / "a.pt").read_bytes()
    path = tmp_path / "m.pt"
    path.write_bytes(data[: int(len(data) * fraction)])
    _expect_error(path, "re-create")


def test_random_bytes(tmp_path):
    path = tmp_path / "m.pt"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 100_000, dtype=np.uint8).tobytes())
    _expect_error(path, "corrupt")


def test_directory_instead_of_file(tmp_path):
    (tmp_path / "m.pt").mkdir()
    _expect_error(tmp_path / "m.pt")


def test_pickle_with_arbitrary_objects_is_refused(tmp_path):
    path = _save_payload(tmp_path, {"format": MODEL_FORMAT, "evil": Path("/etc/passwd")})  # not weights-only safe
    _expect_error(path, "corrupt")


@pytest.mark.parametrize("content", [{"a": torch.zeros(2)}, [1, 2, 3], torch.zeros(3), {"format": "something.else"}])
def test_torch_file_that_is_not_a_model(tmp_path, content):
    _expect_error(_save_payload(tmp_path, content), "not an imagerec model file")


def test_newer_format_version(tmp_path, payload):
    _expect_error(_save_payload(tmp_path, {**payload, "format_version": FORMAT_VERSION + 1}), "newer")


def test_tampered_weight_keeps_old_id(tmp_path, payload):
    state = dict(payload["state_dict"])
    weight = state["conv1.weight"].clone()
    weight[0, 0, 0, 0] += 0.5
    state["conv1.weight"] = weight
    _expect_error(_save_payload(tmp_path, {**payload, "state_dict": state}), "id check failed")


def test_tampered_spec_keeps_old_id(tmp_path, payload):
    spec = {**payload["spec"], "image_size": SIZE * 2}  # still a valid spec, but not the one the id covers
    _expect_error(_save_payload(tmp_path, {**payload, "spec": spec}), "id check failed")


def test_tampered_id(tmp_path, payload):
    _expect_error(_save_payload(tmp_path, {**payload, "model_id": "0" * 16}), "id check failed")


@pytest.mark.parametrize(
    "change",
    [
        lambda p: {**p, "state_dict": {k: v for k, v in p["state_dict"].items() if k != "layer1.0.conv1.weight"}},
        lambda p: {**p, "state_dict": {**p["state_dict"], "conv1.weight": torch.zeros(64, 3, 3, 3)}},
        lambda p: {**p, "state_dict": {**p["state_dict"], "fc.weight": torch.zeros(10, 512)}},
        lambda p: {**p, "spec": {**p["spec"], "stem": "small"}},  # 7x7 weights do not fit a 3x3 stem
        lambda p: {**p, "spec": {**p["spec"], "arch": "resnet50"}},
        lambda p: {**p, "spec": {**p["spec"], "embedding_dim": 128}},
        lambda p: {**p, "spec": {**p["spec"], "image_size": 8}},
        lambda p: {**p, "spec": {**p["spec"], "unknown": 1}},
        lambda p: {k: v for k, v in p.items() if k != "spec"},
        lambda p: {k: v for k, v in p.items() if k != "state_dict"},
    ],
    ids=["missing-weight", "wrong-shape", "extra-weight", "stem", "arch", "dim", "size", "spec-key", "no-spec", "no-weights"],
)
def test_weights_or_spec_inconsistent(tmp_path, payload, change):
    _expect_error(_save_payload(tmp_path, change(payload)), "re-create")


@pytest.mark.parametrize("change", ["missing", "extra"])
def test_weights_not_fitting_spec_are_refused_even_with_a_matching_id(tmp_path, payload, change):
    # A writer that recomputed the id over a wrong set of weights: the id check passes, the weight check must not.
    state = dict(payload["state_dict"])
    if change == "missing":
        del state["layer4.1.bn2.running_var"]
    else:
        state["fc.weight"] = torch.zeros(10, 512)
    spec = ModelSpec.from_dict(payload["spec"])
    forged = {**payload, "state_dict": state, "model_id": compute_model_id(spec, state)}
    _expect_error(_save_payload(tmp_path, forged), "do not match")


# -- small stem ---------------------------------------------------------------------------------


def test_small_stem_model(tmp_path):
    spec = ModelSpec(stem="small", image_size=16)
    model_id = write_random_model(tmp_path / "small.pt", spec, seed=0)
    model = load_model(tmp_path / "small.pt")
    assert model.model_id == model_id and model.spec.stem == "small"
    conv1 = model.backbone.conv1
    assert conv1.kernel_size == (3, 3) and conv1.stride == (1, 1)
    assert isinstance(model.backbone.maxpool, torch.nn.Identity)
    out = TorchEmbedder(model, "cpu").embed(_images(2, size=16))
    assert out.shape == (2, 512) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


# -- inference ----------------------------------------------------------------------------------


def test_embedding_shape_dtype_and_unit_norm(embedder):
    out = embedder.embed(_images(5))
    assert out.shape == (5, 512) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert np.isfinite(out).all()
    assert embedder.input_size == SIZE and embedder.model_id == embedder.model.model_id


def test_embedding_is_deterministic_and_batch_independent(embedder):
    images = _images(4, seed=1)
    first = embedder.embed(images)
    np.testing.assert_array_equal(first, embedder.embed(images))
    singles = np.concatenate([embedder.embed(images[i : i + 1]) for i in range(4)])
    np.testing.assert_allclose(singles, first, atol=1e-5)  # eval mode: no batch statistics
    reordered = embedder.embed(images[::-1].copy())
    np.testing.assert_allclose(reordered[::-1], first, atol=1e-5)


def test_different_images_give_different_embeddings(embedder):
    out = embedder.embed(np.stack([np.zeros((SIZE, SIZE, 3), np.uint8), np.full((SIZE, SIZE, 3), 255, np.uint8), _images(1)[0]]))
    assert not np.allclose(out[0], out[1], atol=1e-3) and not np.allclose(out[0], out[2], atol=1e-3)


def test_empty_batch(embedder):
    out = embedder.embed(np.zeros((0, SIZE, SIZE, 3), dtype=np.uint8))
    assert out.shape == (0, 512)


@pytest.mark.parametrize(
    "shape",
    [(SIZE, SIZE, 3), (1, SIZE, SIZE), (1, 3, SIZE, SIZE), (1, SIZE + 1, SIZE, 3), (1, SIZE, SIZE, 4), (1, 1, SIZE, SIZE, 3)],
)
def test_wrong_input_shape(embedder, shape):
    with pytest.raises(ValueError) as info:
        embedder.embed(np.zeros(shape, dtype=np.uint8))
    assert str(SIZE) in str(info.value)


# -- devices ------------------------------------------------------------------------------------


def test_select_device_auto_and_cpu():
    assert select_device("cpu") == torch.device("cpu")
    auto = select_device("auto")
    if torch.cuda.is_available():
        assert auto.type == "cuda"
    else:
        mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
        assert auto.type == ("mps" if mps else "cpu")
    assert select_device().type == auto.type


def test_select_device_unavailable_cuda_is_an_error():
    if torch.cuda.is_available():
        assert select_device("cuda").type == "cuda"
    else:
        with pytest.raises(ModelFileError) as info:
            select_device("cuda")
        assert "cuda" in str(info.value) and "not available" in str(info.value)


# -- the Embedder protocol ----------------------------------------------------------------------


def test_torch_embedder_implements_the_protocol(embedder, model_files):
    folder, ids = model_files
    assert isinstance(embedder, Embedder)
    assert embedder.arch == "resnet18" and embedder.dim == 512 and embedder.model_id == ids["a"]
    assert embedder.runs_on_cpu and embedder.device == torch.device("cpu")
    assert embedder.preprocess.input_size == SIZE
    from PIL import Image

    pixels = embedder.preprocess(Image.new("RGB", (70, 50), (10, 20, 30)))
    assert pixels.shape == (SIZE, SIZE, 3) and pixels.dtype == np.uint8
    assert embedder.embed(pixels[None]).shape == (1, embedder.dim)


def test_embedder_constructor_and_loader_leave_torch_threads_alone(model_files):
    folder, _ = model_files
    before = torch.get_num_threads()
    torch.set_num_threads(3)  # not the CPU count and not 1: a constructor that set threads would change it
    try:
        TorchEmbedder(load_model(folder / "a.pt"), torch.device("cpu"))
        assert torch.get_num_threads() == 3
        load_embedder(folder / "b.pt", device="cpu")
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_set_torch_threads():
    before = torch.get_num_threads()
    try:
        assert set_torch_threads(2) == 2 and torch.get_num_threads() == 2
        assert set_torch_threads(3, "cpu") == 3 and torch.get_num_threads() == 3
        assert set_torch_threads(1, torch.device("cuda")) == 3  # the model is not on CPU threads: unchanged
        assert torch.get_num_threads() == 3
        assert set_torch_threads(None) == (os.cpu_count() or 1)
    finally:
        torch.set_num_threads(before)


def test_load_embedder_explicit_unavailable_device_is_a_model_file_error(model_files):
    folder, _ = model_files
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(ModelFileError, match="not available"):
        load_embedder(folder / "a.pt", device="cuda")


# -- architecture registry ----------------------------------------------------------------------

TINY_DIM = 8


class _TinyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, TINY_DIM, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3))


TINY_ARCH = Architecture(name="test-tiny", embedding_dim=TINY_DIM, builder=lambda spec: _TinyNet())


@pytest.fixture
def tiny_arch():
    register_architecture(TINY_ARCH)
    yield TINY_ARCH
    from imagerec.embed import base

    base._ARCHITECTURES.pop(TINY_ARCH.name)


def test_registry_knows_resnet18():
    assert "resnet18" in architectures()
    arch = architecture("resnet18")
    assert arch.embedding_dim == 512 and set(arch.stems) == {"imagenet", "small"}


def test_unknown_architecture_names_the_known_ones():
    with pytest.raises(ModelFileError) as info:
        architecture("resnet50")
    assert "resnet50" in str(info.value) and "resnet18" in str(info.value)


def test_registry_loads_a_file_by_its_recorded_arch(tmp_path, tiny_arch):
    spec = ModelSpec(arch="test-tiny", image_size=16, embedding_dim=TINY_DIM)
    model_id = write_random_model(tmp_path / "tiny.pt", spec, seed=0)
    model = load_model(tmp_path / "tiny.pt")
    assert isinstance(model.backbone, _TinyNet) and model.spec == spec and model.model_id == model_id
    embedder = load_embedder(tmp_path / "tiny.pt", device="cpu")
    assert embedder.arch == "test-tiny" and embedder.dim == TINY_DIM and embedder.input_size == 16
    out = embedder.embed(_images(3, size=16))
    assert out.shape == (3, TINY_DIM) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    resnet = load_model(_resnet_file(tmp_path))  # the same loader still builds a ResNet for a resnet18 file
    assert type(resnet.backbone).__name__ == "ResNet"


def _resnet_file(tmp_path: Path) -> Path:
    write_random_model(tmp_path / "resnet.pt", ModelSpec(image_size=16), seed=0)
    return tmp_path / "resnet.pt"


def test_file_of_an_unregistered_arch_is_a_model_file_error(tmp_path, tiny_arch, payload):
    spec = ModelSpec(arch="test-tiny", image_size=16, embedding_dim=TINY_DIM)
    write_random_model(tmp_path / "tiny.pt", spec, seed=0)
    from imagerec.embed import base

    base._ARCHITECTURES.pop("test-tiny")
    try:
        message = _expect_error(tmp_path / "tiny.pt", "unknown model architecture", "'test-tiny'", "resnet18", "re-create")
    finally:
        register_architecture(TINY_ARCH)
    assert "do not match" not in message
    forged = _save_payload(tmp_path, {**payload, "spec": {**payload["spec"], "arch": "vit_b"}}, "vit.pt")
    _expect_error(forged, "unknown model architecture", "'vit_b'", "resnet18")


def test_arch_checks_stem_and_dim(tiny_arch, tmp_path):
    with pytest.raises(ValueError, match="stem"):
        build_backbone(ModelSpec(arch="test-tiny", stem="small", embedding_dim=TINY_DIM))
    with pytest.raises(ValueError, match="embedding_dim"):
        save_model(tmp_path / "m.pt", _TinyNet(), ModelSpec(arch="test-tiny", embedding_dim=512))
    assert not (tmp_path / "m.pt").exists()


def test_registering_a_different_architecture_under_a_taken_name_is_refused(tiny_arch):
    register_architecture(TINY_ARCH)  # the same one again is fine
    with pytest.raises(ValueError, match="already registered"):
        register_architecture(Architecture(name="resnet18", embedding_dim=TINY_DIM, builder=lambda spec: _TinyNet()))
    assert architecture("resnet18").embedding_dim == 512


# -- model id -----------------------------------------------------------------------------------


def test_model_file_id_changes_when_one_weight_changes(tmp_path):
    spec = ModelSpec(image_size=SIZE)
    torch.manual_seed(0)
    net = build_backbone(spec)
    first = save_model(tmp_path / "m.pt", net, spec)
    with torch.no_grad():
        net.layer3[0].conv2.weight[0, 0, 0, 0] += 1e-3
    second = save_model(tmp_path / "m.pt", net, spec)
    assert first != second and load_model(tmp_path / "m.pt").model_id == second
    with torch.no_grad():
        net.layer3[0].conv2.weight[0, 0, 0, 0] -= 1e-3
    assert save_model(tmp_path / "m.pt", net, spec) == first  # and back: the id is a function of the weights


def test_model_id_algorithm_is_unchanged(payload):
    """sha256 of the spec as sorted JSON, then name + raw bytes of each weight by name; 16 hex chars.

    Existing model files (and the embeddings stored under their ids) depend on this staying the same.
    """
    digest = hashlib.sha256(json.dumps(payload["spec"], sort_keys=True).encode())
    for name in sorted(payload["state_dict"]):
        digest.update(name.encode())
        digest.update(payload["state_dict"][name].contiguous().numpy().tobytes())
    assert digest.hexdigest()[:16] == payload["model_id"]
