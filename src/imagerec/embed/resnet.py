"""ResNet-18 (torchvision) with its classifier removed: 512-d pooled features. Registered as "resnet18".

``stem="small"`` swaps the 7x7/stride-2 stem and max-pool for a 3x3/stride-1 convolution (the SimCLR
CIFAR variant), which suits small inputs but costs ~16x more compute.
"""

from __future__ import annotations

from torch import nn
from torchvision.models import resnet18

from imagerec.embed.base import Architecture, ModelSpec, register_architecture


def build_resnet18(spec: ModelSpec) -> nn.Module:
    """A randomly initialised ResNet-18 backbone whose forward returns (N, 512) features."""
    net = resnet18(weights=None)
    if spec.stem == "small":
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net


RESNET18 = register_architecture(Architecture(
    name="resnet18", embedding_dim=512, builder=build_resnet18, stems=("imagenet", "small"),
    description="torchvision ResNet-18 without classifier; stem imagenet (7x7/2 + max-pool) or small (3x3/1)",
))
