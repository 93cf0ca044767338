"""Similarity and distance measures: hand-derived values, properties, broadcasting, hash sign handling."""

from __future__ import annotations

import math
import sqlite3
from contextlib import closing

import numpy as np
import pytest

from imagerec.search.similarity import (
    bhattacharyya_coefficient,
    bhattacharyya_distance,
    chi_square_distance,
    cosine_similarity,
    hamming_distance,
    hash_similarity,
    histogram_intersection,
)

pytestmark = pytest.mark.filterwarnings("error")  # a division by zero or invalid cast is a failure here

ALL_ONES = (1 << 64) - 1


def _popcount(x: int) -> int:
    """Reference Hamming weight from Python's own integers (independent of numpy)."""
    return bin(x & ALL_ONES).count("1")


def _cosine_reference(a, b) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb)


# -- cosine -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([1, 0], [1, 0], 1.0),  # same direction
        ([1, 0], [0, 1], 0.0),  # orthogonal
        ([1, 0], [-1, 0], -1.0),  # opposite
        ([1, 0], [1, 1], 1 / math.sqrt(2)),  # 45°: 1 / (1·√2)
        ([3, 4], [4, 3], 24 / 25),  # (12+12) / (5·5)
        ([1, 2, 2], [2, 0, 0], 1 / 3),  # 2 / (3·2)
    ],
)
def test_cosine_hand_values(a, b, expected):
    assert cosine_similarity(np.array(a), np.array(b)) == pytest.approx(expected, abs=1e-6)


def test_cosine_is_scale_invariant_and_symmetric():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=16), rng.normal(size=16)
    base = cosine_similarity(a, b)
    assert cosine_similarity(b, a) == pytest.approx(base, abs=1e-6)
    assert cosine_similarity(7.5 * a, 0.01 * b) == pytest.approx(base, abs=1e-6)
    assert cosine_similarity(-a, b) == pytest.approx(-base, abs=1e-6)
    assert cosine_similarity(a, a) == pytest.approx(1.0, abs=1e-6)


def test_cosine_matches_reference_on_random_vectors():
    rng = np.random.default_rng(2)
    for _ in range(20):
        a, b = rng.normal(size=32), rng.normal(size=32)
        assert cosine_similarity(a, b) == pytest.approx(_cosine_reference(a, b), abs=1e-5)


def test_cosine_zero_vector_gives_zero_not_nan():
    assert cosine_similarity(np.zeros(4), np.array([1.0, 2, 3, 4])) == 0.0
    assert cosine_similarity(np.zeros(4), np.zeros(4)) == 0.0


def test_cosine_scalar_result_is_python_float():
    result = cosine_similarity(np.array([1.0, 0.0]), np.array([0.0, 1.0]))
    assert type(result) is float


def test_cosine_batch_against_single_broadcasts_both_ways():
    rows = np.array([[1.0, 0.0], [0.0, 1.0], [-2.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    query = np.array([3.0, 0.0])
    expected = [1.0, 0.0, -1.0, 0.0, 1 / math.sqrt(2)]
    left = cosine_similarity(rows, query)
    right = cosine_similarity(query, rows)
    assert isinstance(left, np.ndarray) and left.shape == (5,)
    np.testing.assert_allclose(left, expected, atol=1e-6)
    np.testing.assert_allclose(right, expected, atol=1e-6)


def test_cosine_batch_equals_row_by_row():
    rng = np.random.default_rng(3)
    rows = rng.normal(size=(10, 8))
    query = rng.normal(size=8)
    batch = cosine_similarity(rows, query)
    singles = [cosine_similarity(row, query) for row in rows]
    np.testing.assert_allclose(batch, singles, atol=1e-6)
    # two batches of equal length pair up row by row
    other = rng.normal(size=(10, 8))
    np.testing.assert_allclose(
        cosine_similarity(rows, other), [_cosine_reference(r, o) for r, o in zip(rows, other)], atol=1e-5
    )


# -- histogram measures -------------------------------------------------------------------------

# p = [0.5, 0.5, 0], q = [0, 0.5, 0.5]:
#   intersection = min(.5,0) + min(.5,.5) + min(0,.5) = 0.5
#   chi2 = ½ (0.25/0.5 + 0/1 + 0.25/0.5) = ½ (0.5 + 0.5) = 0.5
#   BC = √0 + √0.25 + √0 = 0.5, Hellinger distance = √(1 − 0.5) = √0.5
P1, Q1 = np.array([0.5, 0.5, 0.0]), np.array([0.0, 0.5, 0.5])
# p = [0.25, 0.75], q = [0.75, 0.25]:
#   intersection = 0.25 + 0.25 = 0.5
#   chi2 = ½ (0.25/1 + 0.25/1) = 0.25
#   BC = 2 √(0.1875) = √3 / 2, distance = √(1 − √3/2)
P2, Q2 = np.array([0.25, 0.75]), np.array([0.75, 0.25])


def test_histogram_intersection_hand_values():
    assert histogram_intersection(P1, Q1) == pytest.approx(0.5)
    assert histogram_intersection(P2, Q2) == pytest.approx(0.5)
    assert histogram_intersection(P1, P1) == pytest.approx(1.0)
    assert histogram_intersection([1.0, 0.0], [0.0, 1.0]) == pytest.approx(0.0)


def test_chi_square_hand_values():
    assert chi_square_distance(P1, Q1) == pytest.approx(0.5)
    assert chi_square_distance(P2, Q2) == pytest.approx(0.25)
    assert chi_square_distance(P1, P1) == pytest.approx(0.0)
    # disjoint: ½ (1²/1 + 1²/1) = 1
    assert chi_square_distance([1.0, 0.0], [0.0, 1.0]) == pytest.approx(1.0)


def test_bhattacharyya_hand_values():
    assert bhattacharyya_coefficient(P1, Q1) == pytest.approx(0.5)
    assert bhattacharyya_distance(P1, Q1) == pytest.approx(math.sqrt(0.5))
    assert bhattacharyya_coefficient(P2, Q2) == pytest.approx(math.sqrt(3) / 2)
    assert bhattacharyya_distance(P2, Q2) == pytest.approx(math.sqrt(1 - math.sqrt(3) / 2))
    assert bhattacharyya_coefficient([1.0, 0.0], [0.0, 1.0]) == pytest.approx(0.0)
    assert bhattacharyya_distance([1.0, 0.0], [0.0, 1.0]) == pytest.approx(1.0)


def _random_histogram(rng, n=64):
    h = rng.random(n) * (rng.random(n) > 0.3)  # some empty bins
    return (h / h.sum()).astype(np.float32)


@pytest.mark.parametrize(
    "measure", [histogram_intersection, chi_square_distance, bhattacharyya_coefficient, bhattacharyya_distance]
)
def test_histogram_measures_are_symmetric(measure):
    rng = np.random.default_rng(4)
    for _ in range(5):
        p, q = _random_histogram(rng), _random_histogram(rng)
        assert measure(p, q) == pytest.approx(measure(q, p), abs=1e-6)


def test_histogram_identity_despite_float32_rounding():
    # 1/512 summed in float32 is not exactly 1: BC may exceed 1 by rounding; the distance must not be NaN.
    p = np.full(512, 1 / 512, dtype=np.float32)
    rng = np.random.default_rng(5)
    q = _random_histogram(rng, 512)
    for h in (p, q):
        assert histogram_intersection(h, h) == pytest.approx(1.0, abs=1e-5)
        assert chi_square_distance(h, h) == 0.0
        d = bhattacharyya_distance(h, h)
        assert not math.isnan(d) and d == pytest.approx(0.0, abs=1e-3)


def test_histogram_measures_match_elementwise_reference():
    rng = np.random.default_rng(6)
    p, q = _random_histogram(rng).astype(np.float64), _random_histogram(rng).astype(np.float64)
    inter = sum(min(a, b) for a, b in zip(p, q))
    chi = 0.5 * sum((a - b) ** 2 / (a + b) for a, b in zip(p, q) if a + b > 0)
    bc = sum(math.sqrt(a * b) for a, b in zip(p, q))
    assert histogram_intersection(p, q) == pytest.approx(inter, abs=1e-5)
    assert chi_square_distance(p, q) == pytest.approx(chi, abs=1e-5)
    assert bhattacharyya_coefficient(p, q) == pytest.approx(bc, abs=1e-6)
    assert bhattacharyya_distance(p, q) == pytest.approx(math.sqrt(1 - bc), abs=1e-6)


def test_histogram_measures_on_zero_histograms_are_finite():
    zero = np.zeros(8, dtype=np.float32)
    p = np.full(8, 1 / 8, dtype=np.float32)
    assert histogram_intersection(zero, p) == 0.0
    assert chi_square_distance(zero, zero) == 0.0  # 0/0 bins are skipped, no NaN
    assert chi_square_distance(zero, p) == pytest.approx(0.5)  # ½ Σ p²/p = ½
    assert bhattacharyya_coefficient(zero, p) == 0.0
    assert bhattacharyya_distance(zero, p) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "measure", [histogram_intersection, chi_square_distance, bhattacharyya_coefficient, bhattacharyya_distance]
)
def test_histogram_measures_batch_vs_single(measure):
    rng = np.random.default_rng(7)
    rows = np.stack([_random_histogram(rng) for _ in range(6)])
    query = _random_histogram(rng)
    left, right = measure(rows, query), measure(query, rows)
    assert isinstance(left, np.ndarray) and left.shape == (6,)
    singles = [measure(row, query) for row in rows]
    np.testing.assert_allclose(left, singles, atol=1e-6)
    np.testing.assert_allclose(right, singles, atol=1e-6)
    assert isinstance(measure(rows[0], query), float)


def test_histogram_batch_hand_values():
    rows = np.stack([P1, Q1, np.array([0.0, 0.0, 1.0])])
    # against P1: identical; the worked example; disjoint
    np.testing.assert_allclose(histogram_intersection(rows, P1), [1.0, 0.5, 0.0], atol=1e-6)
    np.testing.assert_allclose(chi_square_distance(rows, P1), [0.0, 0.5, 1.0], atol=1e-6)
    np.testing.assert_allclose(bhattacharyya_coefficient(rows, P1), [1.0, 0.5, 0.0], atol=1e-6)
    np.testing.assert_allclose(bhattacharyya_distance(rows, P1), [0.0, math.sqrt(0.5), 1.0], atol=1e-6)


# -- hashes -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (0, 0, 0),
        (0, ALL_ONES, 64),
        (0b1011, 0b0110, 3),  # xor 0b1101
        (1 << 63, 0, 1),  # top bit alone
        (1 << 63, (1 << 63) | 1, 1),
        (0xF0F0F0F0F0F0F0F0, 0x0F0F0F0F0F0F0F0F, 64),  # complementary
        (0xFFFF000000000000, 0, 16),
    ],
)
def test_hamming_hand_values(a, b, expected):
    assert hamming_distance(a, b) == expected
    assert hamming_distance(b, a) == expected
    assert type(hamming_distance(a, b)) is int


def test_hamming_signed_and_unsigned_forms_of_one_hash_are_equal():
    # SQLite stores hash h ≥ 2**63 as h − 2**64; both forms mean the same 64 bits.
    for unsigned in (1 << 63, ALL_ONES, 0x8000_0000_0000_0001, 0xDEAD_BEEF_CAFE_F00D):
        signed = unsigned - (1 << 64)
        assert signed < 0
        assert hamming_distance(unsigned, signed) == 0
        assert hamming_distance(np.int64(signed), unsigned) == 0
        assert hamming_distance(signed, 0) == _popcount(unsigned)


def test_hamming_int64_array_from_sqlite_against_unsigned_query():
    rng = np.random.default_rng(8)
    hashes = [int(x) for x in rng.integers(0, 1 << 63, size=20, dtype=np.uint64)]
    hashes = [h | (1 << 63) if i % 2 else h for i, h in enumerate(hashes)]  # half with the top bit set
    hashes += [0, ALL_ONES, 1 << 63]
    with closing(sqlite3.connect(":memory:")) as db:
        db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, dhash INTEGER)")
        db.executemany("INSERT INTO t(dhash) VALUES (?)", [(h - (1 << 64) if h >= 1 << 63 else h,) for h in hashes])
        stored = np.array([r[0] for r in db.execute("SELECT dhash FROM t ORDER BY id")], dtype=np.int64)
    assert (stored < 0).any()
    query = hashes[1]  # an unsigned Python int ≥ 2**63
    expected = [_popcount(h ^ query) for h in hashes]
    result = hamming_distance(stored, query)
    assert isinstance(result, np.ndarray) and result.dtype == np.int64
    np.testing.assert_array_equal(result, expected)
    np.testing.assert_array_equal(hamming_distance(query, stored), expected)
    # the signed query from the same table gives the same answer
    np.testing.assert_array_equal(hamming_distance(stored, stored[1]), expected)


def test_hamming_uint64_array_and_elementwise_pairs():
    a = np.array([0, ALL_ONES, 1 << 63, 0b1011], dtype=np.uint64)
    b = np.array([ALL_ONES, ALL_ONES, 0, 0b0110], dtype=np.uint64)
    np.testing.assert_array_equal(hamming_distance(a, b), [64, 0, 1, 3])


def test_hamming_python_list_with_large_and_small_hashes_is_exact():
    # numpy turns [2**64-1, 3] into float64, which cannot hold 64 bits exactly; results must still be exact.
    hashes = [ALL_ONES, 3, (1 << 63) + 1, -1]
    expected = [_popcount(h) for h in hashes]  # against 0
    np.testing.assert_array_equal(hamming_distance(hashes, 0), expected)
    np.testing.assert_array_equal(hamming_distance(0, hashes), expected)
    np.testing.assert_array_equal(hamming_distance(hashes, hashes), [0, 0, 0, 0])


def test_hamming_is_symmetric_and_zero_on_identity():
    rng = np.random.default_rng(9)
    a = rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, size=50, dtype=np.int64)
    b = rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, size=50, dtype=np.int64)
    np.testing.assert_array_equal(hamming_distance(a, b), hamming_distance(b, a))
    np.testing.assert_array_equal(hamming_distance(a, a), np.zeros(50))
    np.testing.assert_array_equal(hamming_distance(a, b), [_popcount(int(x) ^ int(y)) for x, y in zip(a, b)])


def test_hash_similarity_values():
    assert hash_similarity(0x1234, 0x1234) == 1.0
    assert hash_similarity(0, ALL_ONES) == 0.0  # complementary
    assert hash_similarity(0, 0xFFFF) == pytest.approx(1 - 16 / 64)  # 0.75
    assert hash_similarity(0, 0xFF, bits=32) == pytest.approx(1 - 8 / 32)
    assert hash_similarity(ALL_ONES, -1) == 1.0  # same hash, signed form
    assert type(hash_similarity(1, 2)) is float


def test_hash_similarity_batch():
    stored = np.array([0, -1, 0xFF], dtype=np.int64)
    np.testing.assert_allclose(hash_similarity(stored, 0), [1.0, 0.0, 1 - 8 / 64])
    np.testing.assert_allclose(hash_similarity(0, stored), [1.0, 0.0, 1 - 8 / 64])
