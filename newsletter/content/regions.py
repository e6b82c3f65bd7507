"""Regions: seeding from settings, and recognising a region from a code, a name or an alias."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from sqlmodel import Session

from newsletter.content import queries
from newsletter.core.config import Settings
from newsletter.core.errors import NotFound
from newsletter.core.models import Region

_SPACES = re.compile(r"\s+")


@lru_cache(maxsize=4096)
def _fold(text: str) -> str:
    """Case, spacing and `&`/`and` insensitive form of a heading, so "HQ and Global" matches "HQ & Global"."""
    text = _SPACES.sub(" ", text.replace("&", " and ")).strip().casefold()
    return text.rstrip(":").strip()


@dataclass(frozen=True)
class RegionIndex:
    """Codes and display names in display order, with every spelling that names each code."""

    regions: tuple[tuple[str, str], ...]
    lookup: dict[str, str]

    @classmethod
    def build(cls, regions: Iterable[tuple[str, str]], aliases: dict[str, str]) -> RegionIndex:
        ordered = tuple(regions)
        lookup: dict[str, str] = {}
        for code, name in ordered:
            lookup[_fold(code)] = code
            lookup[_fold(name)] = code
            lookup[_fold(code.replace("-", " "))] = code
        known = {code for code, _ in ordered}
        for alias, code in aliases.items():
            if code in known:
                lookup[_fold(alias)] = code
        return cls(ordered, lookup)

    @classmethod
    def from_settings(cls, settings: Settings) -> RegionIndex:
        return cls.build(settings.regions, settings.region_aliases)

    @classmethod
    def from_db(cls, session: Session, settings: Settings) -> RegionIndex:
        rows = queries.regions_in_order(session)
        return cls.build([(r.code, r.name) for r in rows], settings.region_aliases)

    def resolve(self, text: str) -> str | None:
        """The region code `text` names (code, display name or alias, any case), or None."""
        return self.lookup.get(_fold(text))

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(code for code, _ in self.regions)

    def name(self, code: str) -> str:
        for c, name in self.regions:
            if c == code:
                return name
        raise NotFound(f"no region {code!r}")

    def order(self, codes: Iterable[str]) -> tuple[str, ...]:
        """`codes` in display order, without duplicates."""
        wanted = set(codes)
        return tuple(c for c in self.codes if c in wanted)

    def parse_list(self, text: str, sep: str = ",") -> tuple[str, ...]:
        """Codes from a separated list of codes or names; raises NotFound naming the first unknown one."""
        codes = []
        for part in text.split(sep):
            if not part.strip():
                continue
            code = self.resolve(part)
            if code is None:
                raise NotFound(f"unknown region {part.strip()!r} (known: {', '.join(self.codes)})")
            codes.append(code)
        return self.order(codes)


def seed_regions(session: Session, settings: Settings) -> int:
    """Create the configured regions and bring names and order up to date; returns how many were added."""
    existing = queries.regions_by_code(session)
    added = 0
    for position, (code, name) in enumerate(settings.regions):
        region = existing.get(code)
        if region is None:
            session.add(Region(code=code, name=name, position=position))
            added += 1
        elif (region.name, region.position) != (name, position):
            region.name, region.position = name, position
            session.add(region)
    session.flush()
    return added


region_ids = queries.region_ids
"""Region id by code (kept here too: the benchmarks and `content.bulletins` look it up with the regions)."""
