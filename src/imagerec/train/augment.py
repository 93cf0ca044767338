"""SimCLR augmentations on whole batches, with per-sample random parameters, vectorised.

A Python loop of per-image transforms is ~300x slower than one batched op on a GPU (see
docs/ceilings), so every random parameter is drawn as an (N,) tensor and applied by broadcasting:
random resized crop + horizontal flip as one per-sample affine grid (``F.affine_grid`` +
``F.grid_sample``), colour jitter as per-sample factors (p=0.8), random grayscale (p=0.2) and an
optional Gaussian blur as a grouped convolution. Runs on the device the batch is on; the generator
must live on that device too.

Differences from torchvision's per-image ``ColorJitter``: the order is fixed (brightness, contrast,
then saturation and hue as one 3x3 colour matrix per sample), and hue is a rotation of the chroma
plane in YIQ space rather than a shift in HSV (cheap and close for the small angles used).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# ITU-R 601 luma weights, as torchvision's rgb_to_grayscale.
_LUMA = (0.299, 0.587, 0.114)
_RGB_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))
_YIQ_TO_RGB = torch.linalg.inv(torch.tensor(_RGB_TO_YIQ, dtype=torch.float64)).float()  # once, on the CPU


@dataclass(frozen=True)
class AugmentSettings:
    """Strengths of the SimCLR augmentations (defaults follow the paper's small-image setting)."""

    crop_scale: tuple[float, float] = (0.2, 1.0)  # crop area as a fraction of the image
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # crop aspect ratio range
    flip_p: float = 0.5
    jitter_strength: float = 0.5  # s: brightness/contrast/saturation ±0.8s, hue ±0.2s (paper appendix A)
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # pixels at 224 px; scaled to the output size

    def __post_init__(self) -> None:
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < min <= max <= 1, got {self.crop_scale}")
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"crop_ratio must satisfy 0 < min <= max, got {self.crop_ratio}")
        for name in ("flip_p", "jitter_p", "grayscale_p", "blur_p"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0 <= self.jitter_strength <= 1.25:  # 0.8 * s must stay <= 1 so brightness stays >= 0
            raise ValueError(f"jitter_strength must be in [0, 1.25], got {self.jitter_strength}")
        if not 0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ValueError(f"blur_sigma must satisfy 0 < min <= max, got {self.blur_sigma}")


class SimCLRAugment:
    """``augment(images, generator)``: (N, 3, H, W) uint8 or float in [0, 1] → (N, 3, S, S), same dtype.

    ``S`` is ``out_size`` (default: the input size). Two calls on the same batch give the two views.
    """

    def __init__(self, settings: AugmentSettings = AugmentSettings(), out_size: int | None = None):
        if out_size is not None and out_size < 1:
            raise ValueError(f"out_size must be positive, got {out_size}")
        self.settings = settings
        self.out_size = out_size

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected an (N, 3, H, W) batch, got {tuple(images.shape)}")
        if images.dtype != torch.uint8 and not images.is_floating_point():
            raise ValueError(f"expected uint8 or float images, got {images.dtype}")
        if generator.device.type != images.device.type:
            raise ValueError(f"generator on {generator.device} but images on {images.device}")
        dtype = images.dtype
        x = images.float().div_(255.0) if dtype == torch.uint8 else images.float()
        n = x.shape[0]

        def rand() -> torch.Tensor:  # one (N,) draw; the order of draws is fixed, so a seed reproduces a batch
            return torch.rand(n, generator=generator, device=x.device)

        x = self._crop_flip(x, rand)
        x = self._colour_jitter(x, rand)
        x = self._grayscale(x, rand)
        x = self._blur(x, rand)
        if dtype == torch.uint8:
            return x.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)
        return x.to(dtype)

    def _crop_flip(self, x: torch.Tensor, rand) -> torch.Tensor:
        s = self.settings
        n, _, h, w = x.shape
        size = self.out_size or h
        area = s.crop_scale[0] + (s.crop_scale[1] - s.crop_scale[0]) * rand()
        log_lo, log_hi = math.log(s.crop_ratio[0]), math.log(s.crop_ratio[1])
        ratio = torch.exp(log_lo + (log_hi - log_lo) * rand())
        # Crop width/height as fractions of the image side; affine_grid's coordinates span [-1, 1].
        cw = torch.sqrt(area * ratio).clamp_(max=1.0)
        ch = torch.sqrt(area / ratio).clamp_(max=1.0)
        cx = (2 * rand() - 1) * (1 - cw)
        cy = (2 * rand() - 1) * (1 - ch)
        flip = torch.where(rand() < s.flip_p, -1.0, 1.0)
        theta = torch.zeros(n, 2, 3, device=x.device)
        theta[:, 0, 0] = cw * flip
        theta[:, 0, 2] = cx
        theta[:, 1, 1] = ch
        theta[:, 1, 2] = cy
        grid = F.affine_grid(theta, [n, 3, size, size], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    def _colour_jitter(self, x: torch.Tensor, rand) -> torch.Tensor:
        s = self.settings
        n = x.shape[0]
        apply = (rand() < s.jitter_p).float()

        def factor(amount: float) -> torch.Tensor:  # 1 ± amount, or exactly 1 where jitter is off
            return 1 + apply * amount * (2 * rand() - 1)

        brightness = factor(0.8 * s.jitter_strength)
        contrast = factor(0.8 * s.jitter_strength)
        saturation = factor(0.8 * s.jitter_strength)
        hue = apply * 0.2 * s.jitter_strength * (2 * rand() - 1)  # fraction of a full turn

        x = (x * brightness.view(n, 1, 1, 1)).clamp_(0, 1)
        mean = _luma(x).mean(dim=(1, 2, 3), keepdim=True)
        c = contrast.view(n, 1, 1, 1)
        x = (x * c + mean * (1 - c)).clamp_(0, 1)
        matrix = _hue_matrix(hue) @ _saturation_matrix(saturation)
        return torch.einsum("nij,njhw->nihw", matrix, x).clamp_(0, 1)

    def _grayscale(self, x: torch.Tensor, rand) -> torch.Tensor:
        mask = (rand() < self.settings.grayscale_p).view(-1, 1, 1, 1)
        return torch.where(mask, _luma(x).expand_as(x), x)

    def _blur(self, x: torch.Tensor, rand) -> torch.Tensor:
        s = self.settings
        n, c, h, w = x.shape
        selected = rand() < s.blur_p
        sigma = (s.blur_sigma[0] + (s.blur_sigma[1] - s.blur_sigma[0]) * rand()) * (h / 224)
        if s.blur_p == 0:
            return x
        if x.device.type == "cpu":  # blur only the selected samples: compute is what is scarce here
            out = x.clone()
            out[selected] = _gaussian_blur(x[selected], sigma[selected])
            return out
        # On an accelerator, boolean indexing would wait for the device; unselected samples get a tiny
        # sigma instead, which makes an exact identity kernel.
        return _gaussian_blur(x, torch.where(selected, sigma, torch.full_like(sigma, 1e-3)))


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with one sigma (pixels) per sample, as two grouped convolutions."""
    n, c, h, w = x.shape
    if n == 0:
        return x
    radius = max(1, int(round(0.05 * h)))  # kernel ~10% of the side, as in the paper
    taps = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-(taps**2) / (2 * sigma.clamp(min=1e-3).unsqueeze(1) ** 2))
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (n*c, k)
    planes = x.reshape(1, n * c, h, w)
    planes = F.conv2d(F.pad(planes, (radius, radius, 0, 0), mode="reflect"), kernel.view(n * c, 1, 1, -1), groups=n * c)
    planes = F.conv2d(F.pad(planes, (0, 0, radius, radius), mode="reflect"), kernel.view(n * c, 1, -1, 1), groups=n * c)
    return planes.reshape(n, c, h, w)


def _luma(x: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor(_LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def _saturation_matrix(saturation: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3): out = s * rgb + (1 - s) * luma, per sample."""
    n = saturation.shape[0]
    luma = torch.tensor(_LUMA, device=saturation.device).view(1, 1, 3).expand(n, 3, 3)
    eye = torch.eye(3, device=saturation.device).expand(n, 3, 3)
    s = saturation.view(n, 1, 1)
    return s * eye + (1 - s) * luma


def _hue_matrix(turns: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3): rotate the I/Q chroma plane by ``turns`` of a full circle, per sample."""
    n = turns.shape[0]
    to_yiq = torch.tensor(_RGB_TO_YIQ, device=turns.device)
    from_yiq = _YIQ_TO_RGB.to(turns.device)
    angle = 2 * math.pi * turns
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.zeros(n, 3, 3, device=turns.device)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2] = cos, -sin
    rot[:, 2, 1], rot[:, 2, 2] = sin, cos
    return from_yiq @ rot @ to_yiq
