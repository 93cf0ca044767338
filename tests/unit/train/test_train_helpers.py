"""Training helpers without a training run: the CLI's per-stage bars, the LR schedule, optimiser groups,
the seeded train/val split and folder labels."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from imagerec.train.data import folder_labels, split_rows
from imagerec.train.optim import WarmupCosine, balanced_batches, make_optimizer, peak_lr, warmup_steps, weight_decay


def test_warmup_cosine_schedule():
    rule = WarmupCosine(warmup_steps=4, total_steps=12)
    assert [rule(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert rule(4) == 1.0 and rule(8) == pytest.approx(0.5) and rule(12) == pytest.approx(0.0) and rule(50) == pytest.approx(0.0)
    assert WarmupCosine(0, 0)(0) == 1.0  # no warm-up, degenerate length


def test_warmup_is_a_bounded_fraction_of_the_run():
    notes = []
    assert warmup_steps(None, 10, 1000) == 50  # default: 5 % of the steps
    assert warmup_steps(2, 10, 1000) == 20  # asked for, within the cap
    assert warmup_steps(10, 10, 20, notes.append) == 2 and "shortened from 100 to 2" in notes[0]  # capped at 10 %
    assert warmup_steps(0, 10, 1000) == 0


@pytest.mark.parametrize("n, asked", [(647, 256), (5487, 256), (300, 60), (18, 8), (7, 256), (2, 2), (1000, 1000), (1001, 1000)])
def test_batches_never_exceed_the_request_or_the_set_and_drop_less_than_one_per_step(n, asked):
    batch, steps = balanced_batches(n, asked)
    assert 2 <= batch <= min(asked, n) and steps >= 1
    assert steps == n // batch  # what epoch_batches will make of it
    assert n - batch * steps < max(steps, 2)  # the old rule dropped up to batch - 1 (135 of 647 at 256)


def test_lr_scaling_weight_decay_defaults_and_groups():
    assert peak_lr("sgd", None, 512) == pytest.approx(0.3) and peak_lr("adamw", 2e-3, 128) == pytest.approx(1e-3)
    assert peak_lr("sgd", None, 256, fine_tuning=True) == pytest.approx(0.06)  # 0.4 of it from pretrained weights
    assert peak_lr("sgd", 0.05, 256, fine_tuning=True) == pytest.approx(0.05)  # a given lr is taken as it is
    assert weight_decay("sgd", None) == 1e-4 and weight_decay("adamw", None) == 0.05 and weight_decay("sgd", 0.0) == 0.0
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    opt = make_optimizer("sgd", list(net.parameters()), lr=0.1, weight_decay=1e-4)
    decay, no_decay = opt.param_groups
    assert [p.shape for p in decay["params"]] == [(4, 3, 3, 3)] and decay["weight_decay"] == 1e-4
    assert len(no_decay["params"]) == 3 and no_decay["weight_decay"] == 0.0  # conv bias, bn weight, bn bias
    assert isinstance(opt, torch.optim.SGD) and isinstance(make_optimizer("adamw", list(net.parameters()), 0.1, 0.05), torch.optim.AdamW)


def test_split_rows_is_seeded_disjoint_and_keeps_at_least_two():
    rows = np.arange(3, 23)
    train, val = split_rows(rows, 0.25, seed=1)
    assert len(val) == 5 and len(train) == 15 and sorted(np.concatenate([train, val])) == list(rows)
    assert list(train) == sorted(train) and list(val) == sorted(val)
    assert np.array_equal(val, split_rows(rows, 0.25, seed=1)[1]) and not np.array_equal(val, split_rows(rows, 0.25, seed=2)[1])
    assert len(split_rows(np.arange(10), 0.1, seed=0)[1]) == 2  # one held-out image is lifted to 2
    assert len(split_rows(np.arange(3), 0.5, seed=0)[1]) == 0  # too few to hold any out and keep 2 to train
    assert len(split_rows(np.arange(10), 0.0, seed=0)[1]) == 0


def test_folder_labels():
    assert list(folder_labels(["b/1.jpg", "a/2.jpg", "b/3.jpg"])) == [1, 0, 1]
    assert folder_labels(["a/1.jpg", "a/2.jpg"]) is None  # one class
    assert folder_labels(["a/1.jpg", "2.jpg"]) is None  # not every image in a folder
    assert folder_labels([]) is None
