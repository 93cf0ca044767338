"""Weighted fusion of our three similarity measures (``similarity.py``) into one score per candidate.

Per candidate and query image: embedding cosine, colour-histogram similarity (Bhattacharyya
coefficient Σ√(p·q) by default, or histogram intersection) and dHash similarity 1 − Hamming/64, each
averaged over the query images; the fused score is their weighted sum with weights ≥ 0 normalised to
sum 1. The Bhattacharyya coefficient is the cosine of the square-rooted histograms: it lies in [0, 1]
like the other scores, and the square root damps the few dominant bins (sky, white background) that
decide histogram intersection.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from imagerec.errors import QueryError
from imagerec.search import similarity
from imagerec.store import FeatureRows

SIGNALS = ("embedding", "color", "dhash")

#: Default weights (embedding, colour, dHash) by how the model started, used for every ``query.w_*``
#: left null. Tuned with ``evaluate --tune-weights`` on Caltech-101's train split (docs/benchmarks.md):
#: a pretrained embedder is far better at category neighbours than colour and dHash, which only
#: break near-ties; the seed's from-scratch model gains from both.
DEFAULT_WEIGHTS = {"imagenet": (0.85, 0.0, 0.15), "random": (0.7, 0.2, 0.1)}


@dataclass(frozen=True)
class Weights:
    """Fusion weights, normalised to sum to 1."""

    embedding: float
    color: float
    dhash: float

    @classmethod
    def of(cls, embedding: float, color: float, dhash: float) -> "Weights":
        """Normalised weights; negative, non-finite or all-zero weights are a ``QueryError``."""
        values = (float(embedding), float(color), float(dhash))
        if any(not np.isfinite(v) or v < 0 for v in values):
            raise QueryError(f"weights must be finite and >= 0 (got embedding={values[0]}, color={values[1]}, dhash={values[2]})")
        total = sum(values)
        if total <= 0:
            raise QueryError("weights must not all be 0 (set at least one of --w-embedding, --w-color, --w-dhash)")
        return cls(*(v / total for v in values))

    @classmethod
    def merged(cls, defaults: "Weights", overrides: Mapping[str, float | None] | None) -> "Weights":
        """``defaults`` with the signals named in ``overrides`` replaced (None values keep the default)."""
        values = defaults.as_dict()
        for name, value in (overrides or {}).items():
            if name not in values:
                raise QueryError(f"unknown weight '{name}'; the signals are {', '.join(SIGNALS)}")
            if value is not None:
                values[name] = value
        return cls.of(**values)

    @classmethod
    def default(cls, init: str, given: Sequence[float | None] = (None, None, None)) -> "Weights":
        """The defaults for a model started from ``init`` ("imagenet" / "random"), ``given`` non-None values replacing them."""
        base = DEFAULT_WEIGHTS.get(init, DEFAULT_WEIGHTS["random"])
        return cls.of(*(b if g is None else g for b, g in zip(base, given)))

    def as_dict(self) -> dict[str, float]:
        return {"embedding": self.embedding, "color": self.color, "dhash": self.dhash}


@dataclass(frozen=True)
class QueryImage:
    """One query image's features. ``image_id`` is set when it is an image of the collection."""

    label: str
    embedding: np.ndarray  # float32 (d,)
    histogram: np.ndarray  # float32 (bins**3,)
    dhash: int  # signed int64 form
    image_id: int | None = None
    rel_path: bytes | None = None  # relative to image_root, for collection images
    file_path: str | None = None  # file the query was read from, if any
    source: str = "stored"  # "stored" (features from SQLite) or "decoded"
    thumbnail: np.ndarray | None = None  # grey thumbnail (match.grey_thumbnail) of a decoded query image


@dataclass(frozen=True)
class Scores:
    """Per-candidate scores averaged over the query images (arrays aligned with ``FeatureRows.ids``)."""

    embedding: np.ndarray
    color: np.ndarray
    dhash: np.ndarray
    hamming: np.ndarray  # min over query images

    def fused(self, weights: Weights) -> np.ndarray:
        return weights.embedding * self.embedding + weights.color * self.color + weights.dhash * self.dhash


def score_candidates(queries: Sequence[QueryImage], rows: FeatureRows, color_measure: str = "bhattacharyya") -> Scores:
    """Our measures of every row against every query image, averaged over the query images."""
    n = len(rows)
    emb, col, dh = np.zeros(n), np.zeros(n), np.zeros(n)
    hamming = np.full(n, 64, dtype=np.int64)
    color_fn = similarity.bhattacharyya_coefficient if color_measure == "bhattacharyya" else similarity.histogram_intersection
    if n:
        for q in queries:
            if q.histogram.shape[-1] != rows.histograms.shape[1]:
                raise QueryError(f"query histogram has {q.histogram.shape[-1]} bins, stored ones {rows.histograms.shape[1]} "
                                 "(features.histogram changed?); run 'index' again")
            emb += np.asarray(similarity.cosine_similarity(q.embedding, rows.embeddings), dtype=np.float64)
            col += np.asarray(color_fn(q.histogram, rows.histograms), dtype=np.float64)
            dh += np.asarray(similarity.hash_similarity(q.dhash, rows.dhashes), dtype=np.float64)
            hamming = np.minimum(hamming, similarity.hamming_distance(q.dhash, rows.dhashes))
        emb, col, dh = emb / len(queries), col / len(queries), dh / len(queries)
    return Scores(emb, col, dh, np.asarray(hamming, dtype=np.int64))
