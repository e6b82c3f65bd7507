"""The local-time rule (`core.zones`): due times across DST gaps and repeats, odd offsets, zone names."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from newsletter.core import zones


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("zone", "wall", "due", "why"),
    [
        ("Europe/London", datetime(2026, 11, 30, 7), utc(2026, 11, 30, 7), "winter: GMT"),
        ("Europe/London", datetime(2026, 6, 1, 7), utc(2026, 6, 1, 6), "summer: BST"),
        ("Europe/London", datetime(2026, 3, 29, 1, 30), utc(2026, 3, 29, 1, 30), "skipped: old offset"),
        ("Europe/London", datetime(2026, 10, 25, 1, 30), utc(2026, 10, 25, 0, 30), "repeated: first"),
        ("America/Santiago", datetime(2026, 11, 30, 7), utc(2026, 11, 30, 10), "summer: −03"),
        ("America/Santiago", datetime(2026, 6, 1, 7), utc(2026, 6, 1, 11), "winter: −04"),
        # Chile springs forward at 00:00 on the first Sunday of September: 00:30 does not exist.
        ("America/Santiago", datetime(2026, 9, 6, 0, 30), utc(2026, 9, 6, 4, 30), "skipped at midnight"),
        # …and falls back at 00:00 on the first Sunday of April: 23:30 on the Saturday happens twice.
        ("America/Santiago", datetime(2026, 4, 4, 23, 30), utc(2026, 4, 5, 2, 30), "repeated: first"),
        ("Australia/Lord_Howe", datetime(2026, 11, 30, 7), utc(2026, 11, 29, 20), "summer: +11"),
        ("Australia/Lord_Howe", datetime(2026, 6, 1, 7), utc(2026, 5, 31, 20, 30), "winter: +10:30"),
        # Half-hour DST: 02:00 → 02:30 on the first Sunday of October; 02:15 is skipped.
        ("Australia/Lord_Howe", datetime(2026, 10, 4, 2, 15), utc(2026, 10, 3, 15, 45), "skipped half hour"),
        # 02:00 → 01:30 on the first Sunday of April; 01:45 happens twice.
        ("Australia/Lord_Howe", datetime(2026, 4, 5, 1, 45), utc(2026, 4, 4, 14, 45), "repeated: first"),
        ("Asia/Kathmandu", datetime(2026, 11, 30, 7), utc(2026, 11, 30, 1, 15), "+05:45"),
        ("Pacific/Kiritimati", datetime(2026, 11, 30, 7), utc(2026, 11, 29, 17), "+14: first on Earth"),
        ("Etc/GMT+12", datetime(2026, 11, 30, 7), utc(2026, 11, 30, 19), "−12: last on Earth"),
    ],
)
def test_due_time_follows_the_documented_dst_rule(zone: str, wall: datetime, due: datetime, why: str) -> None:
    assert zones.due_at(wall, zone) == due, why
    assert zones.due_at(wall, zone) == wall.replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)


def test_a_local_send_spans_kiritimati_to_gmt_plus_12() -> None:
    first, last = zones.first_and_last(datetime(2026, 11, 30, 7))
    assert first == zones.due_at(datetime(2026, 11, 30, 7), "Pacific/Kiritimati")
    assert last == zones.due_at(datetime(2026, 11, 30, 7), "Etc/GMT+12")
    assert last - first == timedelta(hours=26)


def test_the_zone_table_has_one_row_per_zone() -> None:
    table = zones.zone_table(datetime(2026, 11, 30, 7), ["Asia/Manila", "Africa/Nairobi", "Asia/Manila"])
    assert table == [("Africa/Nairobi", utc(2026, 11, 30, 4)), ("Asia/Manila", utc(2026, 11, 29, 23))]


@pytest.mark.parametrize("name", ["Europe/London", " Asia/Kathmandu ", "Etc/GMT+12", "UTC"])
def test_iana_names_are_zones(name: str) -> None:
    assert zones.check_zone(name) == name.strip()


@pytest.mark.parametrize(
    "name",
    [
        "",
        "   ",
        "Mars/Olympus",
        "europe/london",
        "localtime",
        "../../etc/passwd",
        "/etc/localtime",
        "X" * 300,
    ],
)
def test_other_names_are_refused_with_a_reason(name: str) -> None:
    with pytest.raises(ValueError, match="time zone"):
        zones.check_zone(name)


@given(st.text(max_size=80))
def test_check_zone_accepts_only_known_zones(text: str) -> None:
    try:
        name = zones.check_zone(text)
    except ValueError:
        return
    assert name in zones.all_zones()
    ZoneInfo(name)


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1)))
def test_wall_times_round_trip_and_every_zone_is_within_a_day(wall: datetime) -> None:
    wall = wall.replace(second=0, microsecond=0)
    assert zones.parse_wall(zones.format_wall(wall)) == wall
    for zone in ("Pacific/Kiritimati", "Etc/GMT+12", "Australia/Lord_Howe", "America/Santiago"):
        assert abs(zones.due_at(wall, zone) - wall.replace(tzinfo=UTC)) <= timedelta(hours=15)


@pytest.mark.parametrize("text", ["tomorrow", "2026-11-30T07:00+01:00", "2026-13-01T07:00"])
def test_a_local_slot_is_a_wall_clock_time_without_offset(text: str) -> None:
    with pytest.raises(ValueError):
        zones.parse_wall(text)
