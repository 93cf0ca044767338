"""Multi-index hashing finds exactly the pairs brute force finds, each once."""

from __future__ import annotations

import numpy as np
import pytest

from imagerec.dedup.hashpairs import band_plan, hash_pairs


def brute(h: np.ndarray, r: int) -> set[tuple[int, int]]:
    d = np.bitwise_count(h[:, None] ^ h[None, :])
    i, j = np.triu_indices(len(h), 1)
    close = d[i, j] <= r
    return set(zip(i[close].tolist(), j[close].tolist()))


def clustered_hashes(n: int, seed: int) -> np.ndarray:
    """Few base hashes with a few bits flipped (like real dHashes of similar pictures), plus exact repeats."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 2**63, size=max(2, n // 20), dtype=np.int64).view(np.uint64)
    h = base[rng.integers(0, len(base), size=n)]
    flips = rng.integers(0, 64, size=(n, 3))
    for k in range(3):
        h = h ^ np.where(rng.random(n) < 0.6, np.left_shift(np.uint64(1), flips[:, k].astype(np.uint64)), np.uint64(0))
    return h


@pytest.mark.parametrize("radius", [0, 1, 3, 6, 7, 10, 12])
def test_every_pair_within_the_radius_is_found_once(radius):
    h = clustered_hashes(1500, seed=radius)
    got = [(a, b) for i, j, _ in hash_pairs(h, radius, chunk=256) for a, b in zip(i.tolist(), j.tolist())]
    assert len(got) == len(set(got))
    assert set(got) == brute(h, radius)


def test_distances_are_the_hamming_distances_and_signed_hashes_work():
    h = clustered_hashes(400, seed=1)
    for i, j, d in hash_pairs(h.view(np.int64), 8):
        assert np.array_equal(d, np.bitwise_count(h[i] ^ h[j]))
        assert (i < j).all()


def test_bands_cover_64_bits_and_guarantee_the_radius():
    for n in (10, 1000, 100_000, 5_000_000):
        for r in (0, 4, 7, 10):
            plan = band_plan(n, r)
            assert sum(w for _, w in plan) == 64 and plan[0][0] == 0
            assert r < len(plan) * (r // len(plan) + 1)  # pigeonhole: some band within r // m bits


def test_tiny_inputs():
    assert list(hash_pairs(np.zeros(1, np.uint64), 5)) == []
    (i, j, d), = list(hash_pairs(np.zeros(2, np.uint64), 0))
    assert i.tolist() == [0] and j.tolist() == [1] and d.tolist() == [0]
