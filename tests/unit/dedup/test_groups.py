"""The duplicate relations, the every-pair grouping rule and the keeper choice."""

from __future__ import annotations

import numpy as np

from imagerec.dedup.groups import (DuplicateSettings, alike, bottleneck_level, closeness_distance, complete_link, keeper,
                                   linked_pieces, relation_levels)

S = DuplicateSettings()


def levels_of(hamming, cosine, color=None, identical=None):
    h = np.asarray(hamming, np.int64)
    c = np.asarray(cosine, np.float32)
    same = np.zeros(len(h), bool) if identical is None else np.asarray(identical)
    return relation_levels(S, h, c, None if color is None else np.asarray(color, np.float32), same).tolist()


def test_relations_strictest_first():
    assert levels_of([0], [1.0], identical=[True]) == [0]
    assert levels_of([S.max_bits], [S.near_similarity]) == [1]  # near: hash close and embeddings agree
    assert levels_of([S.max_bits + 1], [S.near_similarity]) == [3]  # too far in dHash, not the same scene either
    assert levels_of([S.close_bits], [S.close_similarity]) == [1]  # a strong hash match needs weak confirmation only
    assert levels_of([S.close_bits + 1], [S.close_similarity]) == [3]
    assert levels_of([30], [S.min_similarity]) == [2]  # same scene
    assert levels_of([2], [np.nan], color=[S.near_color]) == [1]  # no embedding: colour confirms
    assert levels_of([2], [np.nan], color=[S.near_color - 0.01]) == [3]
    assert levels_of([2], [np.nan]) == [3]  # no embedding and no colour: nothing confirms


def square(values, n, fill):
    m = np.full((n, n), fill, dtype=float)
    for (i, j), v in values.items():
        m[i, j] = m[j, i] = v
    return m


def test_complete_link_never_joins_the_ends_of_a_chain():
    # 0-1, 1-2, 2-3 alike; 0-2, 1-3, 0-3 not: a chain
    distance = square({(0, 1): 0.1, (1, 2): 0.2, (2, 3): 0.1}, 4, 2.0)
    np.fill_diagonal(distance, 0)
    clusters = [set(c.tolist()) for c in complete_link(distance)]
    assert {0, 3} not in clusters and not any({0, 2} <= c or {1, 3} <= c for c in clusters)
    assert clusters == [{0, 1}, {2, 3}]


def test_a_family_where_every_pair_is_alike_stays_one_group():
    distance = np.full((5, 5), 0.3)
    np.fill_diagonal(distance, 0)
    assert [c.tolist() for c in complete_link(distance)] == [[0, 1, 2, 3, 4]]


def test_pieces_follow_tier_links_and_the_tier_is_the_bottleneck():
    levels = square({(0, 1): 0, (1, 2): 1, (3, 4): 2}, 5, 3)
    np.fill_diagonal(levels, 0)
    pieces = [p.tolist() for p in linked_pieces(np.arange(5), levels.astype(int), level=1)]
    assert pieces == [[0, 1, 2]]
    assert bottleneck_level(levels[:3, :3]) == 1 and bottleneck_level(levels[:2, :2]) == 0


def test_alike_pairs_get_distance_below_one():
    lv = np.array([1, 3, 3], np.int8)
    h = np.array([5, 12, 40])
    cos = np.array([0.95, 0.75, 0.2], np.float32)
    ok = alike(S, lv, h, cos)
    assert ok.tolist() == [True, True, False]
    d = closeness_distance(ok, h, cos)
    assert (d[:2] < 1).all() and d[2] >= 1 and d[0] < d[1]


def test_keeper_most_pixels_then_largest_file_then_oldest_then_smallest_id():
    ids = np.array([5, 6, 7, 8])
    assert keeper(np.array([10, 20, 20, 20]), np.array([9, 1, 2, 2]), np.array([0, 0, 5, 3]), ids) == 3
    assert keeper(np.array([1, 1]), np.array([1, 1]), np.array([2, 2]), np.array([9, 4])) == 1
