"""Batched SimCLR augmentations: per-sample randomness, shapes/dtypes/ranges, flip, determinism."""

from __future__ import annotations

import pytest
import torch

from imagerec.train.augment import AugmentSettings, SimCLRAugment

OFF = dict(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)


def _batch(n=8, size=24, seed=0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_uint8_in_uint8_out_same_shape():
    x = _batch()
    out = SimCLRAugment()(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8


def test_float_in_float_out_in_unit_range():
    x = _batch().float() / 255
    out = SimCLRAugment()(x, torch.Generator().manual_seed(0))
    assert out.dtype == torch.float32 and out.shape == x.shape
    assert out.min() >= 0 and out.max() <= 1


def test_out_size_changes_resolution():
    out = SimCLRAugment(out_size=16)(_batch(size=32), torch.Generator().manual_seed(0))
    assert out.shape == (8, 3, 16, 16)


def test_parameters_differ_per_sample():
    one = _batch(n=1)
    x = one.expand(16, -1, -1, -1).contiguous()  # the same image 16 times
    out = SimCLRAugment()(x, torch.Generator().manual_seed(0)).float()
    distinct = {tuple(v.flatten()[:200].tolist()) for v in out}
    assert len(distinct) == 16
    # colour alone also varies per sample
    colour_only = AugmentSettings(**{**OFF, "jitter_p": 1.0})
    means = SimCLRAugment(colour_only)(x, torch.Generator().manual_seed(0)).float().mean(dim=(1, 2, 3))
    assert means.std() > 1.0


def test_flip_is_a_flip_and_identity_is_identity():
    x = _batch()
    flipped = SimCLRAugment(AugmentSettings(**OFF, flip_p=1.0))(x, torch.Generator().manual_seed(0))
    assert torch.equal(flipped, x.flip(-1))
    same = SimCLRAugment(AugmentSettings(**OFF, flip_p=0.0))(x, torch.Generator().manual_seed(0))
    assert torch.equal(same, x)


def test_grayscale_makes_channels_equal():
    out = SimCLRAugment(AugmentSettings(**{**OFF, "grayscale_p": 1.0}))(_batch().float() / 255, torch.Generator().manual_seed(0))
    assert torch.allclose(out[:, 0], out[:, 1]) and torch.allclose(out[:, 1], out[:, 2])


def test_blur_smooths():
    x = _batch().float() / 255
    out = SimCLRAugment(AugmentSettings(**{**OFF, "blur_p": 1.0, "blur_sigma": (20.0, 20.0)}))(x, torch.Generator().manual_seed(0))
    assert out.diff(dim=-1).abs().mean() < 0.5 * x.diff(dim=-1).abs().mean()
    assert out.mean().item() == pytest.approx(x.mean().item(), abs=0.01)


def test_deterministic_under_a_seed():
    x = _batch()
    aug = SimCLRAugment()
    a = aug(x, torch.Generator().manual_seed(7))
    b = aug(x, torch.Generator().manual_seed(7))
    c = aug(x, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("bad", [dict(crop_scale=(0.0, 1.0)), dict(crop_scale=(0.9, 0.5)), dict(jitter_p=1.5),
                                 dict(jitter_strength=2.0), dict(blur_sigma=(0.0, 1.0))])
def test_settings_are_validated(bad):
    with pytest.raises(ValueError):
        AugmentSettings(**bad)


def test_rejects_wrong_layout():
    with pytest.raises(ValueError, match="N, 3, H, W"):
        SimCLRAugment()(torch.zeros(2, 8, 8, 3, dtype=torch.uint8), torch.Generator())


def test_blur_paths_agree():
    # The CPU path blurs a subset; the accelerator path gives the others an identity kernel. Same result.
    from imagerec.train.augment import _gaussian_blur

    x = _batch(n=4).float() / 255
    sigma = torch.tensor([0.8, 1e-3, 1.5, 1e-3])
    full = _gaussian_blur(x, sigma)
    torch.testing.assert_close(full[[1, 3]], x[[1, 3]])
    torch.testing.assert_close(full[[0, 2]], _gaussian_blur(x[[0, 2]], sigma[[0, 2]]))
