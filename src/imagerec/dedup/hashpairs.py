"""Every pair of 64-bit hashes within ``max_bits`` of each other, without comparing all pairs.

Multi-index hashing (Norouzi et al., 2012): the 64 bits are cut into ``m`` bands of about log2(N) bits.
If two hashes differ in at most ``r`` bits, then by the pigeonhole principle some band differs in at
most ``r // m`` bits, so probing each hash's bands at that radius finds every pair, and only pairs
that share such a band are ever compared. A band value's bucket is found in a dense table (2^bits
entries), so the work is ~N · m · probes lookups plus the candidates actually verified, processed in
chunks of rows so memory stays bounded. ``bench/bench_duplicates.py`` measures it at 550k.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import numpy as np

MAX_BAND_BITS = 24  # a 2^24-entry bucket table is 64 MiB of int32: the most we allocate per band
MIN_BAND_BITS = 8
PAIR_BUDGET = 4_000_000  # candidate pairs generated per step (~100 MB of temporaries)


def band_plan(n: int, max_bits: int) -> list[tuple[int, int]]:
    """(shift, width) of each band for ``n`` hashes searched at radius ``max_bits``: the plan with the least
    estimated work (bucket lookups + candidates compared, for uniformly spread hashes)."""
    def bands_of(m: int) -> list[tuple[int, int]]:
        widths = [64 // m + (1 if i < 64 % m else 0) for i in range(m)]
        return list(zip(np.cumsum([0, *widths[:-1]]).tolist(), widths))

    def cost(m: int) -> float:
        width, radius = 64 // m, max_bits // m
        probes = sum(math.comb(width, r) for r in range(min(radius, width) + 1))
        return n * m * probes * (1.0 + n / 2.0 ** width)

    usable = [m for m in range(1, 65) if 64 // m >= MIN_BAND_BITS and -(-64 // m) <= MAX_BAND_BITS]
    return bands_of(min(usable, key=cost))


def _probe_masks(width: int, radius: int) -> np.ndarray:
    """Every XOR mask of at most ``radius`` set bits within ``width`` bits (uint32)."""
    masks = [0]
    for r in range(1, min(radius, width) + 1):
        masks += [sum(1 << b for b in bits) for bits in itertools.combinations(range(width), r)]
    return np.asarray(masks, dtype=np.uint32)


def hash_pairs(hashes: np.ndarray, max_bits: int, *, chunk: int = 8192) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield (i, j, distance) arrays: every pair of row indices i < j whose hashes differ in ≤ ``max_bits`` bits.

    ``hashes`` are uint64 (or int64, reinterpreted). Each pair is yielded exactly once.
    """
    h = np.ascontiguousarray(hashes).view(np.uint64)
    n = len(h)
    if n < 2 or max_bits < 0:
        return
    plan = band_plan(n, max_bits)
    radius = max_bits // len(plan)
    tables = [_band_table(h, shift, width) for shift, width in plan]
    masks = [_probe_masks(width, radius) for _, width in plan]
    for start in range(0, n, chunk):
        rows = np.arange(start, min(n, start + chunk))
        found_i, found_j = [], []
        for (shift, width), (order, starts), probe in zip(plan, tables, masks):
            keys = ((h[rows] >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.uint32)
            for i, j in _bucket_pairs(rows, keys, probe, order, starts):
                close = np.bitwise_count(h[i] ^ h[j]) <= max_bits
                found_i.append(i[close])
                found_j.append(j[close])
        if found_i:
            i, j = np.concatenate(found_i), np.concatenate(found_j)
            key = np.unique(i * n + j)  # a pair close in several bands is found once per band
            i, j = key // n, key % n
            if len(i):
                yield i, j, np.bitwise_count(h[i] ^ h[j]).astype(np.int64)


def _band_table(h: np.ndarray, shift: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(row order sorted by band value, bucket start offsets indexed by band value; length 2^width + 1)."""
    keys = ((h >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.int64)
    order = np.argsort(keys, kind="stable")
    counts = np.bincount(keys, minlength=1 << width)
    starts = np.zeros((1 << width) + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    return order, starts


def _bucket_pairs(rows: np.ndarray, keys: np.ndarray, probe: np.ndarray, order: np.ndarray,
                  starts: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(i, j) with j > i for every row i and every row j in a bucket probed from i's band value."""
    step = max(1, PAIR_BUDGET // (len(probe) * 8))  # ~8 rows per bucket expected at log2(N)-bit bands
    for sub in range(0, len(rows), step):
        r, k = rows[sub:sub + step], keys[sub:sub + step]
        probed = (k[:, None] ^ probe[None, :]).astype(np.int64).ravel()
        lo, hi = starts[probed], starts[probed + 1]
        counts = hi - lo
        owner = np.repeat(np.repeat(r, len(probe)), counts)
        if len(owner) == 0:
            continue
        # positions lo..hi-1 of every probed bucket, concatenated
        offsets = np.arange(len(owner)) - np.repeat(np.cumsum(counts) - counts, counts)
        j = order[np.repeat(lo, counts) + offsets]
        keep = j > owner
        yield owner[keep], j[keep]
