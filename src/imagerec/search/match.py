"""Same-photograph check: is a candidate the query's source photo, possibly cropped, rescaled or re-encoded?

The fused score ranks by likeness, so an edited copy's original can be outranked by another shot of the
same scene. ``match_correlation`` looks for the query inside the candidate: both as small grey
thumbnails, the query resized to cover the candidate's full width or height down to half its area (its
own aspect ratio kept) and compared at every position by normalised cross-correlation, computed with FFTs
— invariant to brightness and contrast changes, near 1 only where the pixels themselves agree. Our own
measure, numpy only.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

#: Longer side of a candidate's thumbnail, in pixels.
THUMB_SIDE = 96
#: Linear sizes of the query relative to the candidate tried: 100 % down to 70 % (a crop keeping half the area).
SCALES = tuple(float(v) for v in np.linspace(1.0, 0.7, 13))
#: Gaussian blur radius (pixels of a ``THUMB_SIDE`` thumbnail): a copy resampled half a pixel off its original
#: still correlates near 1, and fine texture (fur, foliage) does not decide the match.
_BLUR = 1.0
#: Fewer template pixels than this carry too little structure to call two images the same.
_MIN_TEMPLATE_PIXELS = 256


def grey_thumbnail(image: Image.Image, side: int = THUMB_SIDE) -> np.ndarray:
    """``image`` as float32 grey levels with its longer side ``side`` (aspect ratio kept)."""
    grey = image.convert("L")
    scale = side / max(grey.size)
    size = (max(1, round(grey.width * scale)), max(1, round(grey.height * scale)))
    small = grey.resize(size, Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR)
    return np.asarray(small.filter(ImageFilter.GaussianBlur(_BLUR * side / THUMB_SIDE)), dtype=np.float32)


def match_correlation(query: np.ndarray, candidate: np.ndarray) -> float:
    """Best normalised cross-correlation of ``query`` placed inside ``candidate`` (grey thumbnails), in [-1, 1].

    Scales: the query's sides ``SCALES`` of the largest size that fits the candidate. Positions: every
    pixel offset. A flat image (no variance) matches nothing: -1.
    """
    image = candidate.astype(np.float64)
    sizes = _template_sizes(query.shape, image.shape)
    if not sizes:
        return -1.0
    query_image = Image.fromarray(query.astype(np.float32))  # mode "F"
    templates = np.zeros((len(sizes), *image.shape))  # each zero-mean template in the corner of a padded frame
    for k, (w, h) in enumerate(sizes):
        template = np.asarray(query_image.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float64)
        templates[k, :h, :w] = template - template.mean()
    # circular cross-correlation with every template in one batch; placements inside the image never wrap
    products = np.fft.irfft2(np.fft.rfft2(image)[None] * np.conj(np.fft.rfft2(templates)), s=image.shape)
    sums = _SummedArea(image)
    best = -1.0
    for k, (w, h) in enumerate(sizes):
        best = max(best, _best_ncc(products[k], templates[k, :h, :w], sums))
    return best


def _template_sizes(query_shape: tuple[int, ...], candidate_shape: tuple[int, ...]) -> list[tuple[int, int]]:
    """(width, height) of the query inside the candidate at each of ``SCALES`` that fits."""
    qh, qw = query_shape
    ch, cw = candidate_shape
    fit = min(cw / qw, ch / qh)  # the query at the largest size that fits inside the candidate
    sizes = []
    for scale in SCALES:
        factor = fit * scale
        w, h = round(qw * factor), round(qh * factor)
        if w * h >= _MIN_TEMPLATE_PIXELS and (w, h) not in sizes:
            sizes.append((w, h))
    return sizes


class _SummedArea:
    """Sums of values and squares over every window of an image (summed-area tables)."""

    def __init__(self, image: np.ndarray):
        self.shape = image.shape
        self.values = np.pad(image.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        self.squares = np.pad((image * image).cumsum(0).cumsum(1), ((1, 0), (1, 0)))

    def windows(self, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        return self._of(self.values, h, w), self._of(self.squares, h, w)

    @staticmethod
    def _of(table: np.ndarray, h: int, w: int) -> np.ndarray:
        return table[h:, w:] - table[:-h, w:] - table[h:, :-w] + table[:-h, :-w]


def _best_ncc(products: np.ndarray, template: np.ndarray, sums: _SummedArea) -> float:
    """Largest normalised cross-correlation of the zero-mean ``template`` over its placements, given the
    image's correlation with it (``products``, one value per top-left corner)."""
    h, w = template.shape
    norm = np.sqrt((template * template).sum())
    if norm < 1e-6:
        return -1.0
    rows, cols = sums.shape
    valid = products[: rows - h + 1, : cols - w + 1]  # the window's mean drops out: the template sums to 0
    total, squares = sums.windows(h, w)
    spread = np.sqrt(np.maximum(squares - total * total / (h * w), 0.0))
    scores = np.where(spread > 1e-3 * norm, valid / np.maximum(spread, 1e-9) / norm, -1.0)
    return float(scores.max())
