"""ResNet-18 (torchvision) with its classifier removed: 512-d pooled features. Registered as "resnet18".

``stem="small"`` swaps the 7x7/stride-2 stem and max-pool for a 3x3/stride-1 convolution (the SimCLR
CIFAR variant), which suits small inputs but costs ~16x more compute. ImageNet weights are
torchvision's ``IMAGENET1K_V1``, read from ``$TORCH_HOME/hub/checkpoints/`` (downloaded there once when
missing and the network allows).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18

from imagerec.embed.base import Architecture, ModelSpec, register_architecture
from imagerec.errors import ModelFileError


def build_resnet18(spec: ModelSpec) -> nn.Module:
    """A randomly initialised ResNet-18 backbone whose forward returns (N, 512) features."""
    net = resnet18(weights=None)
    if spec.stem == "small":
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net


def imagenet_state_dict() -> dict[str, Any]:
    """torchvision's ImageNet weights for the backbone (classifier dropped); ModelFileError when unavailable."""
    url = ResNet18_Weights.IMAGENET1K_V1.url
    where = f"{torch.hub.get_dir()}/checkpoints/{url.rsplit('/', 1)[-1]}"
    try:
        raw = torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False, weights_only=True)
    except Exception as exc:
        raise ModelFileError(f"ImageNet weights for resnet18 not found at {where} and not downloadable "
                             f"({type(exc).__name__}); put torchvision's file there, or set model.init: random") from None
    return {key: value for key, value in raw.items() if not key.startswith("fc.")}


def resnet_stages(backbone: nn.Module) -> list[nn.Module]:
    """The stages of a ResNet backbone: stem (first convolution and its batch norm), then layer1 to layer4."""
    return [nn.ModuleList([backbone.conv1, backbone.bn1]),
            backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4]


RESNET18 = register_architecture(Architecture(
    name="resnet18", embedding_dim=512, builder=build_resnet18, stems=("imagenet", "small"),
    imagenet=imagenet_state_dict, stages=resnet_stages,
    description="torchvision ResNet-18 without classifier; stem imagenet (7x7/2 + max-pool) or small (3x3/1)",
))
