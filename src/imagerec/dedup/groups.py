"""When two images are duplicates, and how confirmed pairs become groups.

Relations, strictest first (a pair gets the strictest that holds):

* **exact**: the two files have identical bytes (BLAKE2b of both, read at grouping time);
* **near** (an edited copy): dHash within ``max_bits`` and the embeddings agree (cosine ≥
  ``near_similarity``), or dHash within ``close_bits`` with cosine ≥ ``close_similarity`` (a strong
  hash match needs only weak confirmation: a 50 % resize moves a 224-px embedding more than its dHash);
  without embeddings the colour histograms confirm instead (Bhattacharyya coefficient ≥ ``near_color``);
* **similar** (same scene, e.g. burst shots): cosine ≥ ``min_similarity``.

Grouping, so that a chain of small edits A≈B≈C never joins unrelated A and C: every member of a group
is linked to another member by a relation of the requested tier, and *every* pair inside a group must
be alike — cosine ≥ ``group_similarity`` (without embeddings: dHash within 2·``max_bits``). The second
rule is complete-link: the candidate pairs are split into connected components (small in practice),
each is clustered with SciPy's complete linkage on a distance that is < 1 exactly for alike pairs
(closer pairs merge first), and each cluster is cut into the connected pieces of its tier links. (Plain
complete-link on the tier relation itself splits real families: a 50 % resize and a 10 % crop of one
photo are each near the original but not near each other.) A component too large for one pairwise
matrix is grouped seed by seed under the same rules (``assemble``). A group's tier is the loosest
relation needed to connect it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TIERS = ("exact", "near", "similar")
NONE = len(TIERS)  # level of a pair with no relation
RELATIONS = (*TIERS, "alike")  # how a pair of a group is named: its relation, or "alike" (only the group rule holds)


@dataclass(frozen=True)
class DuplicateSettings:
    """What counts as a duplicate (see the module docstring); ``tier`` is the loosest relation a group may use."""

    max_bits: int = 10
    near_similarity: float = 0.90
    close_bits: int = 3
    close_similarity: float = 0.5
    near_color: float = 0.95
    min_similarity: float = 0.94
    group_similarity: float = 0.70
    tier: str = "similar"
    neighbours: int = 4

    @property
    def level(self) -> int:
        return TIERS.index(self.tier)

    @classmethod
    def from_config(cls, config, **overrides) -> "DuplicateSettings":
        """The ``duplicates`` section of a config, with non-None ``overrides`` (CLI options) applied."""
        section = config.duplicates.model_dump()
        section.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**section)


def relation_levels(settings: DuplicateSettings, hamming: np.ndarray, cosine: np.ndarray, color: np.ndarray | None,
                    identical: np.ndarray) -> np.ndarray:
    """Level (0 exact, 1 near, 2 similar, 3 none) of each pair; NaN cosine = no embedding for that pair."""
    has_cos = ~np.isnan(cosine)
    cos = np.where(has_cos, cosine, -np.inf)
    confirmed = (cos >= settings.near_similarity) | ((hamming <= settings.close_bits) & (cos >= settings.close_similarity))
    if color is not None:
        confirmed |= ~has_cos & (color >= settings.near_color)
    near = (hamming <= settings.max_bits) & confirmed
    similar = cos >= settings.min_similarity
    return np.select([identical, near, similar], [0, 1, 2], default=NONE).astype(np.int8)


def alike(settings: DuplicateSettings, levels: np.ndarray, hamming: np.ndarray, cosine: np.ndarray) -> np.ndarray:
    """Whether each pair may share a group: related at the tier, or loosely alike (see the module docstring)."""
    if settings.level == 0:
        return levels == 0
    loose = np.where(np.isnan(cosine), hamming <= 2 * settings.max_bits, np.nan_to_num(cosine) >= settings.group_similarity)
    return (levels <= settings.level) | loose


def closeness_distance(allowed: np.ndarray, hamming: np.ndarray, cosine: np.ndarray) -> np.ndarray:
    """< 1 for pairs allowed in one group (closer pairs lower: higher cosine, else fewer bits), 2 for the others."""
    tie = np.where(np.isnan(cosine), hamming / 65.0, np.clip((1.0 - np.nan_to_num(cosine)) / 2.0, 0.0, 0.99))
    return np.where(allowed, tie, 2.0)


def linked_pieces(cluster: np.ndarray, levels: np.ndarray, level: int) -> list[np.ndarray]:
    """``cluster`` (positions) cut into the connected pieces of its links at ``level`` or stricter (``levels``: square)."""
    from scipy.sparse.csgraph import connected_components

    sub = levels[np.ix_(cluster, cluster)] <= level
    _, labels = connected_components(sub, directed=False)
    return [cluster[labels == c] for c in np.unique(labels) if (labels == c).sum() > 1]


def bottleneck_level(levels: np.ndarray) -> int:
    """The loosest relation needed to connect every member (``levels``: the group's square matrix)."""
    from scipy.sparse.csgraph import connected_components

    for level in range(len(TIERS)):
        if connected_components(levels <= level, directed=False)[0] == 1:
            return level
    return NONE


def complete_link(distance: np.ndarray) -> list[np.ndarray]:
    """Clusters (arrays of positions, 2+ members) of a square ``distance`` matrix in which every pair is < 1."""
    if len(distance) < 2:
        return []
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    square = distance.astype(np.float64, copy=True)
    np.fill_diagonal(square, 0.0)
    labels = fcluster(linkage(squareform(square, checks=False), method="complete"), t=0.999, criterion="distance")
    clusters = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    return [c for c in clusters if len(c) > 1]


def keeper(pixels: np.ndarray, sizes: np.ndarray, mtimes: np.ndarray, ids: np.ndarray) -> int:
    """Position of the suggested keeper: most pixels, then largest file, then oldest, then smallest id."""
    return int(np.lexsort((ids, mtimes, -sizes, -pixels))[0])
