"""``duplicates``: exact copies, edited copies and same-scene shots in the whole collection (see ``run``)."""

from imagerec.dedup.groups import TIERS, DuplicateSettings
from imagerec.dedup.report import DuplicateGroup, DuplicateMember, DuplicatePair, DuplicateReport
from imagerec.dedup.run import find_duplicates

__all__ = ["TIERS", "DuplicateGroup", "DuplicateMember", "DuplicatePair", "DuplicateReport", "DuplicateSettings",
           "find_duplicates"]
