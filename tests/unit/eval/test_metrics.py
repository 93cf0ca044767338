"""Leave-one-out precision@k and mAP on a case worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from imagerec.eval.metrics import mean_average_precision, precision_at_k, retrieval_scores


def _at(degrees: float) -> list[float]:
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]


def test_known_answer():
    # Unit vectors at 0° (A), 10° (B), 25° (A), 90° (B), 180° (C: a singleton, never a counted query).
    # Rankings by angle, leave-one-out, and the rank of the one relevant item:
    #   0° A : 10°, 25°, 90°, 180° -> relevant at rank 2: AP 1/2, P@2 1/2
    #  10° B : 0°, 25°, 90°, 180°  -> relevant at rank 3: AP 1/3, P@2 0
    #  25° A : 10°, 0°, 90°, 180°  -> relevant at rank 2: AP 1/2, P@2 1/2
    #  90° B : 25°, 10°, 0°, 180°  -> relevant at rank 2: AP 1/2, P@2 1/2
    # mAP = (1/2 + 1/3 + 1/2 + 1/2) / 4 = 0.458333; P@2 = 1.5 / 4 = 0.375
    vectors = np.array([_at(0), _at(10), _at(25), _at(90), _at(180)]) * np.array([[1], [2], [3], [1], [5]])
    labels = np.array(["A", "B", "A", "B", "C"])
    scores = retrieval_scores(vectors, labels, k=2)
    assert scores.queries == 4
    assert scores.precision_at_k == pytest.approx(0.375)
    assert scores.mean_average_precision == pytest.approx((0.5 + 1 / 3 + 0.5 + 0.5) / 4)
    assert precision_at_k(vectors, labels, k=1) == pytest.approx(0.0)  # every nearest neighbour is the other class
    assert mean_average_precision(vectors, labels) == pytest.approx(0.458333, abs=1e-6)


def test_perfect_clusters_score_one():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 10
    vectors = np.repeat(centres, 5, axis=0) + rng.normal(scale=0.01, size=(15, 8))
    labels = np.repeat([0, 1, 2], 5)
    scores = retrieval_scores(vectors, labels, k=4)
    assert scores.precision_at_k == pytest.approx(1.0) and scores.mean_average_precision == pytest.approx(1.0)


def test_rejects_mismatched_inputs():
    with pytest.raises(ValueError):
        retrieval_scores(np.zeros((3, 2)), np.zeros(4))
