"""From related pairs to checked groups: components, files still as indexed, byte identity, complete-link, keeper."""

from __future__ import annotations

import hashlib
import os

import numpy as np

from imagerec.dedup.catalog import Catalog
from imagerec.dedup.groups import (RELATIONS, TIERS, DuplicateSettings, alike, bottleneck_level, closeness_distance, complete_link, keeper,
                                   linked_pieces, relation_levels)
from imagerec.dedup.report import DuplicateGroup, DuplicateMember, DuplicatePair
from imagerec.progress import ProgressCallback, report as report_progress
from imagerec.store.records import absolute_path, display_path

MAX_COMPONENT = 2000  # larger connected components are grouped seed by seed (_cluster_large): bounded memory
MAX_PAIRS_LISTED = 45  # a group of up to 10 lists every pair; larger ones list each member against the keeper


class Grouper:
    """Turns related pairs into ``DuplicateGroup``s (see ``dedup.groups`` for the rules)."""

    def __init__(self, image_root, catalog: Catalog, vectors, settings: DuplicateSettings, notices: list[str]):
        self.root, self.catalog, self.vectors, self.settings, self.notices = image_root, catalog, vectors, settings, notices
        self._digests: dict[int, str | None] = {}

    def groups(self, a: np.ndarray, b: np.ndarray, progress: ProgressCallback | None = None) -> list[DuplicateGroup]:
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        nodes = np.unique(np.concatenate([a, b]))
        if len(nodes) == 0:
            return []
        graph = coo_matrix((np.ones(len(a)), (np.searchsorted(nodes, a), np.searchsorted(nodes, b))), shape=(len(nodes),) * 2)
        _, labels = connected_components(graph, directed=False)
        order = np.argsort(labels, kind="stable")
        components = np.split(nodes[order], np.flatnonzero(np.diff(labels[order])) + 1)
        self.catalog.load(nodes)
        present = self._unchanged(nodes)
        out = []
        for done, members in enumerate(components, 1):
            members = members[present[np.searchsorted(nodes, members)]]
            out += self._cluster(members) if len(members) <= MAX_COMPONENT else self._cluster_large(members, a, b)
            if done % 1000 == 0 or done == len(components):
                report_progress(progress, "duplicates: groups", done, len(components))
        out.sort(key=lambda g: (TIERS.index(g.tier), -len(g.members), g.members[0].id))
        return out

    def _unchanged(self, ids: np.ndarray) -> np.ndarray:
        """Whether each file still exists with the size and mtime it was indexed with (else left out, and said)."""
        rows = self.catalog.rows_of(ids)
        ok = np.zeros(len(ids), dtype=bool)
        for k, (image_id, row) in enumerate(zip(ids.tolist(), rows.tolist())):
            try:
                st = os.stat(absolute_path(self.root, self.catalog.path(image_id)))
            except OSError:
                continue
            ok[k] = st.st_size == self.catalog.size[row] and st.st_mtime_ns == self.catalog.mtime_ns[row]
        if (~ok).any():
            self.notices.append(f"{int((~ok).sum())} image(s) changed or removed since the last index were left out; "
                                "run 'index' to update the collection")
        return ok

    def _cluster(self, members: np.ndarray) -> list[DuplicateGroup]:
        if len(members) < 2:
            return []
        n = len(members)
        i, j = np.triu_indices(n, 1)
        hamming, cosine, color, maybe = self.catalog.evidence(self.vectors, members[i], members[j],
                                                              with_color=self.settings.level >= 1)
        identical = self._identical(members[i], members[j], maybe)
        levels = relation_levels(self.settings, hamming, cosine, color, identical)
        square = np.zeros((n, n))
        square[i, j] = square[j, i] = closeness_distance(alike(self.settings, levels, hamming, cosine), hamming, cosine)
        level_of = np.zeros((n, n), dtype=np.int8)
        level_of[i, j] = level_of[j, i] = levels
        evidence = {(int(x), int(y)): (int(h), c, int(lv)) for x, y, h, c, lv in zip(i, j, hamming, cosine, levels)}
        pieces = [p for c in complete_link(square) for p in linked_pieces(c, level_of, self.settings.level)]
        return [self._group(members[p], p, evidence, level_of) for p in pieces]

    def _cluster_large(self, members: np.ndarray, a: np.ndarray, b: np.ndarray) -> list[DuplicateGroup]:
        """A component too big for one pairwise matrix (e.g. thousands of near-black frames): seeded by the
        best-connected free image, each group is found among the seed's direct links only (memory ∝ degree²)."""
        inside = np.isin(a, members) & np.isin(b, members)
        ea, eb = np.concatenate([a[inside], b[inside]]), np.concatenate([b[inside], a[inside]])
        order = np.argsort(ea, kind="stable")
        ea, eb = ea[order], eb[order]
        starts = np.searchsorted(ea, members)
        ends = np.searchsorted(ea, members, side="right")
        free = dict.fromkeys(members.tolist(), True)
        out = []
        for k in np.argsort(-(ends - starts), kind="stable"):
            seed = int(members[k])
            if not free[seed]:
                continue
            links = [int(x) for x in eb[starts[k]:ends[k]] if free[int(x)]][: MAX_COMPONENT - 1]
            for group in self._cluster(np.asarray(sorted({seed, *links}))):
                if seed in {m.id for m in group.members}:
                    out.append(group)
                    for m in group.members:
                        free[m.id] = False
            free[seed] = False
        return out

    def _identical(self, a: np.ndarray, b: np.ndarray, maybe: np.ndarray) -> np.ndarray:
        """Identical bytes, compared only where ``maybe`` (same dHash, size and dimensions)."""
        out = np.zeros(len(a), dtype=bool)
        for k in np.flatnonzero(maybe):
            da, db = self._digest(int(a[k])), self._digest(int(b[k]))
            out[k] = da is not None and da == db
        return out

    def _digest(self, image_id: int) -> str | None:
        if image_id not in self._digests:
            path = absolute_path(self.root, self.catalog.path(image_id))
            try:
                with open(path, "rb") as f:
                    self._digests[image_id] = hashlib.file_digest(f, "blake2b").hexdigest()
            except OSError:
                self._digests[image_id] = None
        return self._digests[image_id]

    def _group(self, ids: np.ndarray, local: np.ndarray, evidence: dict, level_of: np.ndarray) -> DuplicateGroup:
        c = self.catalog
        rows = c.rows_of(ids)
        best = keeper(c.width[rows] * c.height[rows], c.size[rows], c.mtime_ns[rows], ids)

        def pair(x: int, y: int) -> tuple[int, float | None, int]:
            h, cos, lv = evidence[(min(local[x], local[y]), max(local[x], local[y]))]
            return h, None if np.isnan(cos) else round(float(cos), 4), lv

        members = []
        for k, (image_id, row) in enumerate(zip(ids.tolist(), rows.tolist())):
            h, cos, _ = pair(k, best) if k != best else (0, 1.0 if self.vectors is not None else None, 0)
            path = c.path(image_id)
            members.append(DuplicateMember(image_id, display_path(absolute_path(self.root, path)), display_path(path), int(c.width[row]), int(c.height[row]),
                                           int(c.size[row]), c.mtime_ns[row] / 1e9, k == best, h, cos))
        n = len(ids)
        listed = ([(x, y) for x in range(n) for y in range(x + 1, n)] if n * (n - 1) // 2 <= MAX_PAIRS_LISTED
                  else [(best, y) for y in range(n) if y != best])
        pairs = [DuplicatePair(int(ids[x]), int(ids[y]), *pair(x, y)[:2], RELATIONS[pair(x, y)[2]]) for x, y in listed]
        tier = TIERS[bottleneck_level(level_of[np.ix_(local, local)])]
        return DuplicateGroup(tier, int(ids[best]), members, pairs)
