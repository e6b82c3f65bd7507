"""Time zones and local-time slots: which names are zones, and when a wall-clock time comes in each.

A local-time send is a wall-clock time with no zone ("Monday 07:00"); each subscriber receives it when
that time comes in their own IANA zone. Everything here is pure: names and times in, times out.

    due_at(datetime(2026, 11, 30, 7), "Asia/Kathmandu")   # 2026-11-30 01:15 UTC
    zone_table(slot, ["Europe/London", "Pacific/Kiritimati"])
    first_and_last(slot)                                  # the earliest and latest zone on Earth

**The DST rule** (PEP 495's `fold=0`, what `zoneinfo` does by default):

- A wall time that a zone skips (the clock jumps from 01:00 to 02:00, and the slot is 01:30) is read
  with the offset in force *before* the jump, so it falls the gap's length later on the new clock:
  01:30 in London on the spring-forward Sunday is 01:30 UTC, which the clocks there show as 02:30.
- A wall time that a zone repeats (the clock goes back from 02:00 to 01:00) is its *first* occurrence,
  the earlier instant: 01:30 in London on the autumn Sunday is 00:30 UTC (01:30 BST).

A half-hour DST (Australia/Lord_Howe) and odd offsets (Asia/Kathmandu, +05:45) need nothing special.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, available_timezones

MAX_ZONE_NAME = 64
"""The longest zone name stored (the longest IANA name is 32 characters)."""


_NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})
"""Files some tz databases carry that are not zones a person lives in."""


@functools.cache
def all_zones() -> frozenset[str]:
    """Every IANA zone name this machine's tz database knows (`zoneinfo.available_timezones`)."""
    return frozenset(available_timezones()) - _NOT_ZONES


def check_zone(raw: str) -> str:
    """The zone name as stored; ValueError (saying why) unless it is an IANA zone `zoneinfo` knows.

    Only names from the tz database are accepted: no file paths, no "localtime", nothing over
    `MAX_ZONE_NAME` characters. Matching is exact (IANA names are case-sensitive).
    """
    name = raw.strip()
    if not name:
        raise ValueError("the time zone is empty")
    if len(name) > MAX_ZONE_NAME or name not in all_zones():
        raise ValueError(
            f"unknown time zone {name[:MAX_ZONE_NAME]!r} (expected an IANA name such as Europe/London)"
        )
    return name


def parse_wall(text: str) -> datetime:
    """A local-time slot as written (`2026-11-30T07:00`): a naive wall-clock time, to the minute.

    ValueError if the text is not an ISO-8601 date and time, or carries an offset (a local slot has no zone).
    """
    try:
        wall = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a date and time such as 2026-11-30T07:00") from exc
    if wall.tzinfo is not None:
        raise ValueError(f"{text!r} has a UTC offset; a local time has none (each subscriber's zone applies)")
    return wall.replace(second=0, microsecond=0)


def format_wall(wall: datetime) -> str:
    """The stored form of a local-time slot: `YYYY-MM-DDTHH:MM`."""
    return wall.strftime("%Y-%m-%dT%H:%M")


def due_at(wall: datetime, zone: str) -> datetime:
    """When the wall-clock time `wall` comes in `zone`, in UTC (the DST rule in the module docstring)."""
    return wall.replace(tzinfo=ZoneInfo(zone), fold=0).astimezone(UTC)


def zone_table(wall: datetime, zones: Iterable[str]) -> list[tuple[str, datetime]]:
    """(zone, due time in UTC) for each distinct zone: the small table the planning statement joins."""
    return [(zone, due_at(wall, zone)) for zone in sorted(set(zones))]


@functools.lru_cache(maxsize=64)
def first_and_last(wall: datetime) -> tuple[datetime, datetime]:
    """The first and last moment `wall` comes anywhere (over every zone): when a local send starts and ends.

    The first is usually Pacific/Kiritimati (UTC+14), the last Etc/GMT+12 (UTC−12).
    """
    times = [due_at(wall, zone) for zone in all_zones()]
    return min(times), max(times)


def window(stored: str | None) -> tuple[datetime, datetime] | None:
    """(first, last) moment a bulletin's stored local-time slot comes anywhere; None for an ordinary send."""
    return first_and_last(parse_wall(stored)) if stored else None
