"""Per-epoch validation: NT-Xent on fixed views of the val split, and precision@10 / mAP of cosine
neighbours of the backbone's embeddings when the images sit in class folders."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from imagerec.eval.metrics import retrieval_scores
from imagerec.train.data import chunks, prefetch_batches
from imagerec.train.simclr import SimCLRModel

VIEW_SEED_OFFSET = 7919  # the validation views' generator: seed + this, the same views every epoch


@dataclass(frozen=True)
class ValScores:
    """Validation figures; None where they cannot be computed (too few images, no class folders)."""

    loss: float | None = None
    p_at_10: float | None = None
    mean_ap: float | None = None


@torch.no_grad()
def validate(model: SimCLRModel, images: np.ndarray, rows: np.ndarray, labels: np.ndarray | None,
             batch: int, seed: int) -> ValScores:
    """Score ``model`` on cache ``rows`` of ``images`` (leaves it in eval mode)."""
    if len(rows) < 2:
        return ValScores()
    model.train(False)
    gen = torch.Generator(device=model.device).manual_seed(seed + VIEW_SEED_OFFSET)
    loss_total, count, embeddings = 0.0, 0, []
    for uint8 in prefetch_batches(images, chunks(rows, batch), pin=model.device.type == "cuda"):
        x = model.to_unit(uint8)
        clean, views = model.normalise(x), model.two_views(x, gen)
        with model.autocast():
            h = model.backbone(torch.cat([clean, views]))
            z = model.head(h[len(x):])
        embeddings.append(F.normalize(h[: len(x)].float(), dim=1).cpu())
        if len(x) >= 2:
            loss_total += float(model.pair_loss(z)) * len(x)
            count += len(x)
    loss = loss_total / count if count else None
    if labels is None:
        return ValScores(loss)
    scores = retrieval_scores(torch.cat(embeddings).numpy(), labels[rows], k=10)
    return ValScores(loss, scores.precision_at_k, scores.mean_average_precision)
