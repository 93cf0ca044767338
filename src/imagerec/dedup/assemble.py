"""From related pairs to checked groups: components, files still as indexed, byte identity, complete-link, keeper."""

from __future__ import annotations

import hashlib
import os

import numpy as np

from imagerec.config import Config
from imagerec.dedup.groups import (RELATIONS, TIERS, DuplicateSettings, alike, bottleneck_level, closeness_distance, complete_link, keeper,
                                   linked_pieces, relation_levels)
from imagerec.dedup.report import DuplicateGroup, DuplicateMember, DuplicatePair
from imagerec.progress import ProgressCallback, report as report_progress
from imagerec.search.similarity import bhattacharyya_coefficient
from imagerec.store import Store
from imagerec.store.records import absolute_path, display_path
from imagerec.vectors import from_blob

MAX_COMPONENT = 2000  # larger connected components are grouped seed by seed (_cluster_large): bounded memory
MAX_PAIRS_LISTED = 45  # a group of up to 10 lists every pair; larger ones list each member against the keeper


class Grouper:
    """Turns related pairs into ``DuplicateGroup``s (see ``dedup.groups`` for the rules)."""

    def __init__(self, config: Config, store: Store, catalog, vectors, settings: DuplicateSettings, notices: list[str]):
        self.root = config.data.image_root
        self.store, self.catalog, self.vectors, self.settings, self.notices = store, catalog, vectors, settings, notices
        self._digests: dict[int, str | None] = {}
        self._path_of: dict[int, bytes] = {}

    def groups(self, a: np.ndarray, b: np.ndarray, progress: ProgressCallback | None = None) -> list[DuplicateGroup]:
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        nodes = np.unique(np.concatenate([a, b]))
        if len(nodes) == 0:
            return []
        graph = coo_matrix((np.ones(len(a)), (np.searchsorted(nodes, a), np.searchsorted(nodes, b))), shape=(len(nodes),) * 2)
        _, labels = connected_components(graph, directed=False)
        order = np.argsort(labels, kind="stable")
        cuts = np.flatnonzero(np.diff(labels[order])) + 1
        components = np.split(nodes[order], cuts)
        paths = self._path_of = self._paths(nodes)
        present = self._unchanged(nodes, paths)
        out = []
        for done, members in enumerate(components, 1):
            members = members[present[np.searchsorted(nodes, members)]]
            out += self._cluster(members, paths) if len(members) <= MAX_COMPONENT else self._cluster_large(members, a, b, paths)
            if done % 1000 == 0 or done == len(components):
                report_progress(progress, "duplicates: groups", done, len(components))
        out.sort(key=lambda g: (TIERS.index(g.tier), -len(g.members), g.members[0].id))
        return out

    def _paths(self, ids: np.ndarray) -> dict[int, bytes]:
        out = {}
        for start in range(0, len(ids), 900):
            chunk = ids[start:start + 900].tolist()
            out.update(self.store.read(f"SELECT id, path FROM images WHERE id IN ({','.join('?' * len(chunk))})", chunk))
        return out

    def _unchanged(self, ids: np.ndarray, paths: dict[int, bytes]) -> np.ndarray:
        """Whether each file still exists with the size and mtime it was indexed with (else left out, and said)."""
        rows = self.catalog.rows_of(ids)
        ok = np.zeros(len(ids), dtype=bool)
        for k, (image_id, row) in enumerate(zip(ids.tolist(), rows.tolist())):
            try:
                st = os.stat(absolute_path(self.root, paths[image_id]))
            except OSError:
                continue
            ok[k] = st.st_size == self.catalog.size[row] and st.st_mtime_ns == self.catalog.mtime_ns[row]
        if (~ok).any():
            self.notices.append(f"{int((~ok).sum())} image(s) changed or removed since the last index were left out; "
                                "run 'index' to update the collection")
        return ok

    def _cluster(self, members: np.ndarray, paths: dict[int, bytes]) -> list[DuplicateGroup]:
        if len(members) < 2:
            return []
        n = len(members)
        i, j = np.triu_indices(n, 1)
        rows = self.catalog.rows_of(members)
        hamming = np.bitwise_count((self.catalog.dhash[rows][i] ^ self.catalog.dhash[rows][j]).view(np.uint64)).astype(np.int64)
        cosine = (self.vectors.cosine(members[i], members[j]) if self.vectors is not None
                  else np.full(len(i), np.nan, np.float32))
        color = self._colors(members, i, j) if self.vectors is None else None
        identical = self._identical(members, rows, i, j, hamming)
        levels = relation_levels(self.settings, hamming, cosine, color, identical)
        square = np.zeros((n, n))
        square[i, j] = square[j, i] = closeness_distance(alike(self.settings, levels, hamming, cosine), hamming, cosine)
        level_of = np.zeros((n, n), dtype=np.int8)
        level_of[i, j] = level_of[j, i] = levels
        evidence = {(int(x), int(y)): (int(h), c, int(lv)) for x, y, h, c, lv in zip(i, j, hamming, cosine, levels)}
        pieces = [p for c in complete_link(square) for p in linked_pieces(c, level_of, self.settings.level)]
        return [self._group(members[p], p, evidence, level_of, paths) for p in pieces]

    def _cluster_large(self, members: np.ndarray, a: np.ndarray, b: np.ndarray, paths: dict[int, bytes]) -> list[DuplicateGroup]:
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
            for group in self._cluster(np.asarray(sorted({seed, *links})), paths):
                if seed in {m.id for m in group.members}:
                    out.append(group)
                    for m in group.members:
                        free[m.id] = False
            free[seed] = False
        return out

    def _colors(self, members: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        marks = ",".join("?" * len(members))
        hist = dict(self.store.read(f"SELECT id, histogram FROM images WHERE id IN ({marks})", members.tolist()))
        stack = np.stack([from_blob(hist[m]) for m in members.tolist()])
        return np.asarray(bhattacharyya_coefficient(stack[i], stack[j]), np.float32)

    def _identical(self, members: np.ndarray, rows: np.ndarray, i: np.ndarray, j: np.ndarray, hamming: np.ndarray) -> np.ndarray:
        """Identical bytes, checked only for pairs with the same dHash, size and dimensions."""
        c = self.catalog
        maybe = ((hamming == 0) & (c.size[rows][i] == c.size[rows][j]) & (c.width[rows][i] == c.width[rows][j])
                 & (c.height[rows][i] == c.height[rows][j]))
        out = np.zeros(len(i), dtype=bool)
        for k in np.flatnonzero(maybe):
            da, db = self._digest(int(members[i[k]])), self._digest(int(members[j[k]]))
            out[k] = da is not None and da == db
        return out

    def _digest(self, image_id: int) -> str | None:
        if image_id not in self._digests:
            path = absolute_path(self.root, self._path_of[image_id])
            try:
                with open(path, "rb") as f:
                    self._digests[image_id] = hashlib.file_digest(f, "blake2b").hexdigest()
            except OSError:
                self._digests[image_id] = None
        return self._digests[image_id]

    def _group(self, ids: np.ndarray, local: np.ndarray, evidence: dict, level_of: np.ndarray,
               paths: dict[int, bytes]) -> DuplicateGroup:
        c = self.catalog
        rows = c.rows_of(ids)
        best = keeper(c.width[rows] * c.height[rows], c.size[rows], c.mtime_ns[rows], ids)

        def pair(x: int, y: int) -> tuple[int, float | None, int]:
            h, cos, lv = evidence[(min(local[x], local[y]), max(local[x], local[y]))]
            return h, None if np.isnan(cos) else round(float(cos), 4), lv

        members = []
        for k, (image_id, row) in enumerate(zip(ids.tolist(), rows.tolist())):
            h, cos, _ = pair(k, best) if k != best else (0, 1.0 if self.vectors is not None else None, 0)
            members.append(DuplicateMember(image_id, display_path(absolute_path(self.root, paths[image_id])),
                                           display_path(paths[image_id]), int(c.width[row]), int(c.height[row]),
                                           int(c.size[row]), c.mtime_ns[row] / 1e9, k == best, h, cos))
        n = len(ids)
        listed = ([(x, y) for x in range(n) for y in range(x + 1, n)] if n * (n - 1) // 2 <= MAX_PAIRS_LISTED
                  else [(best, y) for y in range(n) if y != best])
        pairs = [DuplicatePair(int(ids[x]), int(ids[y]), *pair(x, y)[:2], RELATIONS[pair(x, y)[2]]) for x, y in listed]
        tier = TIERS[bottleneck_level(level_of[np.ix_(local, local)])]
        return DuplicateGroup(tier, int(ids[best]), members, pairs)
