"""Optimiser and learning-rate schedule: SGD or AdamW, linear warm-up then cosine decay to 0.

The peak learning rate is given per 256 images and scaled linearly with the batch size; biases and
batch-norm scales get no weight decay.
"""

from __future__ import annotations

import math

import torch
from torch import nn

DEFAULT_LR = {"sgd": 0.15, "adamw": 1e-3}  # per 256 images
DEFAULT_WEIGHT_DECAY = {"sgd": 1e-4, "adamw": 0.05}
FINE_TUNE_LR_FACTOR = 0.4  # from pretrained weights (last stages only): 0.06 per 256 beat 0.015 on Caltech, docs §10
DEFAULT_WARMUP_FRACTION, MAX_WARMUP_FRACTION = 0.05, 0.10


class WarmupCosine:
    """LR multiplier per step: linear warm-up to 1, then cosine decay to 0 (a picklable LambdaLR rule)."""

    def __init__(self, warmup_steps: int, total_steps: int):
        self.warmup_steps = warmup_steps
        self.total_steps = max(total_steps, 1)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def peak_lr(optimizer: str, lr: float | None, batch: int, fine_tuning: bool = False) -> float:
    """``lr`` (or the optimiser's default, 0.4 of it when fine-tuning) per 256 images, scaled to ``batch``."""
    default = DEFAULT_LR[optimizer] * (FINE_TUNE_LR_FACTOR if fine_tuning else 1.0)
    return (lr if lr is not None else default) * batch / 256


def warmup_steps(warmup_epochs: float | None, steps_per_epoch: int, total_steps: int, say=None) -> int:
    """Warm-up steps: ``warmup_epochs`` (default 5 % of the run), never more than 10 % of ``total_steps``."""
    cap = int(MAX_WARMUP_FRACTION * total_steps)
    if warmup_epochs is None:
        return int(DEFAULT_WARMUP_FRACTION * total_steps)
    wanted = round(warmup_epochs * steps_per_epoch)
    if wanted > cap and say is not None:
        say(f"note: warm-up shortened from {wanted} to {cap} steps (10 % of this run's {total_steps})")
    return min(wanted, cap)


def balanced_batches(n_images: int, batch_size: int) -> tuple[int, int]:
    """(batch, steps per epoch), batch at most ``batch_size``, leaving fewer than ``steps`` images out of an epoch.

    Full batches only (NT-Xent and batch norm want them), so an epoch of ``n_images`` with batch
    ``n // steps`` drops ``n - steps * batch < steps`` images instead of up to ``batch_size - 1``.
    """
    steps = max(1, math.ceil(n_images / batch_size))
    batch = max(2, n_images // steps) if n_images >= 2 else n_images
    return batch, max(n_images // batch, 1)


def weight_decay(optimizer: str, value: float | None) -> float:
    """``value``, or the optimiser's default when None."""
    return value if value is not None else DEFAULT_WEIGHT_DECAY[optimizer]


def make_optimizer(name: str, params: list[nn.Parameter], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """SGD (momentum 0.9) or AdamW over ``params``; weight decay on matrices and kernels only."""
    decay, no_decay = [], []
    for param in params:
        (decay if param.ndim > 1 else no_decay).append(param)  # biases and batch-norm scales: no decay
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9)
    return torch.optim.AdamW(groups, lr=lr)


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: WarmupCosine) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step scheduler following ``schedule``."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def reschedule(scheduler: torch.optim.lr_scheduler.LambdaLR, schedule: WarmupCosine) -> None:
    """After loading a checkpoint: follow ``schedule`` (the epoch count may have changed) from the saved step."""
    scheduler.lr_lambdas[0] = schedule
    for group, base in zip(scheduler.optimizer.param_groups, scheduler.base_lrs):
        group["lr"] = base * schedule(scheduler.last_epoch)
