"""SimCLR parts: the projection head and the NT-Xent loss.

Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020 (arXiv:2002.05709). The head is only used during training; the
embedding model file holds the backbone, whose 512-d output is the representation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
