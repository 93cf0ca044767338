"""SimCLR parts: the projection head, the NT-Xent loss, and the model they train (backbone + head + views).

Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020 (arXiv:2002.05709). The head is only used during training; the
embedding model file holds the backbone, whose output (512-d for ResNet-18) is the representation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from imagerec.embed.base import ModelSpec, architecture
from imagerec.train.augment import AugmentSettings, SimCLRAugment


class ProjectionHead(nn.Module):
    """MLP g(h): (N, in_dim) backbone features → (N, out_dim) projections (Linear-BN-ReLU-Linear)."""

    def __init__(self, in_dim: int = 512, hidden_dim: int = 512, out_dim: int = 128):
        super().__init__()
        if min(in_dim, hidden_dim, out_dim) < 1:
            raise ValueError(f"dimensions must be positive, got {in_dim}, {hidden_dim}, {out_dim}")
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim, bias=False),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


class NTXentLoss(nn.Module):
    """Normalised temperature-scaled cross-entropy (SimCLR eq. 1), averaged over all 2N anchors.

    ``z1``, ``z2``: (N, D) projections of two views; row i of ``z1`` and row i of ``z2`` are the
    positive pair, the other 2N - 2 rows are negatives. Vectors are L2-normalised here, so the
    similarity is cosine; computed in float32 whatever the input dtype. Returns a scalar.
    """

    def __init__(self, temperature: float = 0.5):
        super().__init__()
        if not temperature > 0 or temperature != temperature:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if temperature < 1e-3:
            raise ValueError(f"temperature {temperature} is too small (< 1e-3): the logits overflow")
        self.temperature = float(temperature)

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        if z1.ndim != 2 or z1.shape != z2.shape:
            raise ValueError(f"expected two (N, D) tensors of the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
        n = z1.shape[0]
        if n < 2:
            raise ValueError("NT-Xent needs at least 2 pairs (one positive and one negative per anchor)")
        z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
        logits = z @ z.T / self.temperature
        logits.fill_diagonal_(float("-inf"))  # an anchor is never its own negative
        targets = torch.arange(2 * n, device=z.device).add_(n).remainder_(2 * n)
        return F.cross_entropy(logits, targets)


@dataclass
class SimCLRModel:
    """Backbone + projection head + augmentation + loss on one device: what a training step runs."""

    backbone: nn.Module
    head: ProjectionHead
    augment: SimCLRAugment
    loss_fn: NTXentLoss
    device: torch.device
    memory_format: torch.memory_format
    mean: torch.Tensor  # (1, 3, 1, 1) on device, inputs in [0, 1]
    std: torch.Tensor
    fixed: nn.ModuleList = field(default_factory=nn.ModuleList)  # backbone stages that are not trained

    def keep_fixed(self, stages: list[nn.Module]) -> None:
        """Train none of ``stages`` (the backbone's first ones): no gradients, batch-norm statistics frozen."""
        self.fixed = nn.ModuleList(stages)
        self.fixed.requires_grad_(False)
        self.fixed.eval()

    def trainable(self) -> list[nn.Parameter]:
        """The parameters the optimiser updates: the backbone's unfixed stages and the head."""
        return [p for module in (self.backbone, self.head) for p in module.parameters() if p.requires_grad]

    def to_unit(self, images: torch.Tensor) -> torch.Tensor:
        """Uint8 NHWC (CPU) → float NCHW in [0, 1] on the device."""
        return images.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] images → the network's input (spec mean/std, memory format)."""
        return ((x - self.mean) / self.std).contiguous(memory_format=self.memory_format)

    def two_views(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(2N, 3, S, S) network input: two augmented views of each [0, 1] image, the first N then the second."""
        return self.normalise(torch.cat([self.augment(x, generator), self.augment(x, generator)]))

    def autocast(self) -> torch.autocast:
        """bf16 autocast on CUDA, a no-op elsewhere."""
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda")

    def pair_loss(self, z: torch.Tensor) -> torch.Tensor:
        """NT-Xent of (2N, D) projections laid out as ``two_views`` makes them."""
        z1, z2 = z.float().chunk(2)
        return self.loss_fn(z1, z2)

    def train(self, mode: bool = True) -> None:
        """Training (or eval) mode for backbone and head; fixed stages always evaluate."""
        self.backbone.train(mode)
        self.head.train(mode)
        self.fixed.eval()


def build_simclr(spec: ModelSpec, augment: AugmentSettings, temperature: float, device: torch.device,
                 channels_last: bool) -> SimCLRModel:
    """A freshly initialised SimCLR model (draws from torch's global RNG: seed it first)."""
    arch = architecture(spec.arch)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    backbone = arch.build(spec).to(device, memory_format=memory_format)
    head = ProjectionHead(in_dim=arch.embedding_dim).to(device)
    return SimCLRModel(
        backbone=backbone, head=head, augment=SimCLRAugment(augment, out_size=spec.image_size),
        loss_fn=NTXentLoss(temperature), device=device, memory_format=memory_format,
        mean=torch.tensor(spec.mean, device=device).view(1, 3, 1, 1),
        std=torch.tensor(spec.std, device=device).view(1, 3, 1, 1),
    )
