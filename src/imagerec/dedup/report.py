"""What ``duplicates`` returns: groups of images, each with its members, suggested keeper and pairwise evidence."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class DuplicateMember:
    """One image of a group; ``hamming``/``cosine`` compare it with the group's keeper (None: no embedding)."""

    id: int
    path: str
    relpath: str
    width: int
    height: int
    size: int
    mtime: float
    keep: bool
    hamming: int
    cosine: float | None


@dataclass(frozen=True)
class DuplicatePair:
    """Evidence for one pair of a group: dHash Hamming distance, embedding cosine, and the relation that holds."""

    a: int
    b: int
    hamming: int
    cosine: float | None
    relation: str


@dataclass(frozen=True)
class DuplicateGroup:
    """Images that are all duplicates of each other; ``tier`` is the loosest relation between two of them."""

    tier: str
    keep: int
    members: list[DuplicateMember]
    pairs: list[DuplicatePair]

    def to_dict(self) -> dict[str, Any]:
        return {"tier": self.tier, "keep": self.keep, "size": len(self.members),
                "members": [asdict(m) for m in self.members], "pairs": [asdict(p) for p in self.pairs]}


@dataclass(frozen=True)
class DuplicateReport:
    """Every group found, the parameters used, and what the run noticed (e.g. files changed since ``index``)."""

    groups: list[DuplicateGroup]
    params: dict[str, Any]
    images: int
    notices: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def n_groups(self) -> int:
        return len(self.groups)

    @property
    def n_images_in_groups(self) -> int:
        return sum(len(g.members) for g in self.groups)

    def by_tier(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for g in self.groups:
            counts[g.tier] = counts.get(g.tier, 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        return {"groups": [g.to_dict() for g in self.groups], "n_groups": self.n_groups,
                "n_images_in_groups": self.n_images_in_groups, "groups_by_tier": self.by_tier(), "images": self.images,
                "params": self.params, "notices": list(self.notices), "timings": dict(self.timings)}
