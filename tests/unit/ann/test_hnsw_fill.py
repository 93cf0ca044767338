"""``ann.hnsw`` defaults: level-0 neighbour lists filled with the links the pruning heuristic dropped (``fill_level0``),
M = 32, and the beam width chosen from the index size."""

from __future__ import annotations

import numpy as np

from imagerec.ann.base import AnnSettings
from imagerec.ann.hnsw import EF_SEARCH_MAX, EF_SEARCH_MIN, HnswBackend, auto_ef_search


def _tight_groups(groups: int = 40, members: int = 30, dim: int = 64, seed: int = 0) -> np.ndarray:
    """Unit vectors in tight groups whose members are about equally far from each other (copies of one photo)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(groups, dim))
    vectors = np.repeat(centres, members, axis=0) + rng.normal(scale=0.6, size=(groups * members, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def _level0_degrees(backend: HnswBackend) -> np.ndarray:
    import faiss

    hnsw = faiss.downcast_index(backend._index.index).hnsw
    neighbors = faiss.vector_to_array(hnsw.neighbors)
    offsets = faiss.vector_to_array(hnsw.offsets)
    start, end = hnsw.cum_nb_neighbors(0), hnsw.cum_nb_neighbors(1)  # level 0's slice of each node's list
    return np.array([(neighbors[offsets[i] + start:offsets[i] + end] >= 0).sum() for i in range(len(offsets) - 1)])


def _built(vectors: np.ndarray, fill: bool) -> HnswBackend:
    backend = HnswBackend(AnnSettings(params={"M": 8, "ef_construction": 64, "fill_level0": fill}, threads=1))
    backend.add(np.arange(len(vectors), dtype=np.int64), vectors)
    return backend


def test_fill_level0_is_the_default_and_recorded():
    backend = HnswBackend(AnnSettings(params={"M": 8}))
    assert backend.fill_level0 is True and backend.build_params()["fill_level0"] is True
    assert HnswBackend(AnnSettings()).M == 32


def test_beam_width_grows_with_the_index_within_its_bounds():
    sizes = [0, 300, 50_000, 200_000, 300_000, 550_000, 5_000_000]
    widths = [auto_ef_search(n) for n in sizes]
    assert widths == sorted(widths) and widths[0] == widths[2] == EF_SEARCH_MIN  # small collections: the old default
    assert EF_SEARCH_MIN < widths[3] < widths[4] < EF_SEARCH_MAX == widths[5] == widths[6]  # 550k: 0.993 measured there


def test_filled_lists_keep_the_links_the_heuristic_prunes():
    vectors = _tight_groups()
    pruned, filled = _level0_degrees(_built(vectors, False)), _level0_degrees(_built(vectors, True))
    assert pruned.mean() < 0.8 * 16  # the heuristic leaves most level-0 lists (2M = 16 slots) part empty
    assert filled.mean() > 0.95 * 16 and filled.mean() > pruned.mean() + 3


def test_fill_does_not_lose_neighbours():
    vectors = _tight_groups(seed=1)
    truth = np.argsort(-(vectors[:100] @ vectors.T), axis=1)[:, :10]
    recall = {}
    for fill in (False, True):
        index = _built(vectors, fill)._index
        import faiss

        found = index.search(vectors[:100], 10, params=faiss.SearchParametersHNSW(efSearch=16))[1]
        recall[fill] = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)])
    assert recall[True] >= recall[False]
