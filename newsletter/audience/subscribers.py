"""Subscribers: address normalisation, the CSV import format, and bulk import.

The import format (documented for volunteers in `subscribers/README.md`)::

    email,name,regions,status,timezone
    ada@example.org,Ada Lovelace,africa;South Asia,active,Africa/Nairobi

`regions` are codes or names separated by `;` (empty means all regions); `status` is optional
(default `active`); `timezone` is optional, an IANA name (empty: keep the subscriber's zone, or for a
new subscriber the default `TIMEZONE`). Re-importing an address updates it. An import never re-activates an address that
unsubscribed, bounced or complained, and never stores an address that is suppressed.

Reading (`read_csv`) is pure and yields each row or a line-numbered problem; `import_subscribers`
writes the good rows in chunks with a handful of statements per chunk, never one per row.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import sqlalchemy as sa
from email_validator import EmailNotValidError, validate_email
from sqlmodel import Session, col, select

from newsletter.audience.timezones import retime
from newsletter.content.regions import RegionIndex
from newsletter.content.regions import region_ids as regions_by_code
from newsletter.core import audit
from newsletter.core.dialect import insert_many, one_of
from newsletter.core.errors import InvalidTransition, Problem
from newsletter.core.models import (
    SUBSCRIBER,
    SUBSCRIPTION,
    SUPPRESSION,
    Region,
    Subscription,
    email_hash,
    utcnow,
)
from newsletter.core.status import SubscriberStatus, check_subscriber
from newsletter.core.zones import check_zone

COLUMNS = ("email", "name", "regions", "status", "timezone")
REQUIRED_COLUMNS = ("email",)
CHUNK = 2000
MAX_NAME = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")

# A conservative subset of what email-validator accepts, for the common all-ASCII address: dot-atom
# local part, LDH labels and an alphabetic TLD. Anything else goes through email-validator in full.
# tests/test_subscribers.py checks (property test) that this never accepts what email-validator refuses.
_SIMPLE_EMAIL = re.compile(
    r"(?P<local>[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*)"
    r"@(?P<domain>(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63})"
)
_SPECIAL_USE_TLDS = {"arpa", "invalid", "local", "localhost", "onion", "test", "internal", "home", "lan"}


def normalize_email(raw: str) -> str:
    """The address as stored: validated (syntax only, no DNS) and lower-cased; ValueError says why not."""
    text = raw.strip()
    simple = _SIMPLE_EMAIL.fullmatch(text)
    if (
        simple
        and len(text) <= 254
        and len(simple.group("local")) <= 64
        and simple.group("domain").rsplit(".", 1)[-1].lower() not in _SPECIAL_USE_TLDS
    ):
        return text.lower()
    try:
        result = validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from exc
    return result.normalized.lower()


def validate_name(raw: str) -> str:
    """A display name safe for headers and pages; ValueError for line breaks and control characters."""
    name = raw.strip()
    if _CONTROL.search(name):
        raise ValueError("the name contains a line break or control character")
    if len(name) > MAX_NAME:
        raise ValueError(f"the name is longer than {MAX_NAME} characters")
    return name


class Row(NamedTuple):
    line: int
    email: str
    name: str
    regions: tuple[str, ...]
    status: SubscriberStatus
    timezone: str | None = None
    """An IANA zone name, or None when the cell was empty (keep the zone, or the default for a new row)."""


def _region_parser(regions: RegionIndex) -> Callable[[str], tuple[str, ...] | str]:
    """Parses a `regions` cell into codes in display order (all regions when empty), or returns the
    first unknown name as a str. Cached per distinct cell: a list has few distinct region mixes."""
    cache: dict[str, tuple[str, ...] | str] = {}

    def parse(cell: str) -> tuple[str, ...] | str:
        found = cache.get(cell)
        if found is not None:
            return found
        codes = []
        result: tuple[str, ...] | str | None = None
        for part in cell.split(";"):
            if part.strip():
                code = regions.resolve(part)
                if code is None:
                    result = part.strip()
                    break
                codes.append(code)
        if result is None:
            result = regions.order(codes) or regions.codes
        if len(cache) < 10_000:
            cache[cell] = result
        return result

    return parse


def read_csv(text: str, regions: RegionIndex) -> Iterator[Row | Problem]:
    """Each data row as a `Row`, or a `Problem` naming its line. A problem at line 0 concerns the file."""
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff"), newline=""))
    try:
        header = next(reader)
    except StopIteration:
        yield Problem(0, "the file is empty; expected a header line: email,name,regions[,status][,timezone]")
        return
    except csv.Error as exc:
        yield Problem(1, f"unreadable header: {exc}")
        return
    columns = [h.strip().lower() for h in header]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        yield Problem(
            1,
            f"the header has no {', '.join(missing)} column; expected email,name,regions[,status][,timezone]",
        )
        return
    unknown = [c for c in columns if c and c not in COLUMNS]
    if unknown:
        yield Problem(
            1, f"unknown column(s) {', '.join(unknown)}; expected email,name,regions[,status][,timezone]"
        )
        return
    # Position of each column, or a position past any row (read as empty) when the column is absent.
    absent = len(columns)
    email_at, name_at, regions_at, status_at, zone_at = (
        columns.index(c) if c in columns else absent for c in COLUMNS
    )
    parse_regions = _region_parser(regions)
    statuses = {s.value: s for s in SubscriberStatus}
    seen: dict[str, int] = {}
    line_end = reader.line_num
    while True:
        start = line_end + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield Problem(start, f"unreadable CSV: {exc}")
            return
        line_end = reader.line_num
        if len(fields) > absent:
            if any(f.strip() for f in fields):
                yield Problem(start, f"{len(fields)} fields, but the header has {absent}")
            continue
        if not any(f.strip() for f in fields):
            continue  # blank lines are tolerated
        fields += [""] * (absent + 1 - len(fields))
        try:
            email = normalize_email(fields[email_at])
        except ValueError as exc:
            yield Problem(start, f"invalid email {fields[email_at].strip()!r}: {exc}")
            continue
        if email in seen:
            yield Problem(start, f"duplicate of {email} on line {seen[email]}")
            continue
        try:
            name = validate_name(fields[name_at])
        except ValueError as exc:
            yield Problem(start, str(exc))
            continue
        codes = parse_regions(fields[regions_at])
        if isinstance(codes, str):
            yield Problem(start, f"unknown region {codes!r} (known: {', '.join(regions.codes)})")
            continue
        raw_status = fields[status_at].strip().lower() or SubscriberStatus.ACTIVE
        status = statuses.get(raw_status)
        if status is None:
            yield Problem(start, f"unknown status {raw_status!r} (allowed: {', '.join(statuses)})")
            continue
        zone = fields[zone_at].strip() or None
        if zone is not None:
            try:
                zone = check_zone(zone)
            except ValueError as exc:
                yield Problem(start, str(exc))
                continue
        seen[email] = start
        yield Row(start, email, name, codes, status, zone)


@dataclass
class ImportReport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    kept_status: int = 0
    """Rows whose status change was refused (e.g. an unsubscribed address listed as active)."""
    suppressed: int = 0
    """Rows not stored at all because the address is suppressed (or was erased)."""
    problems: list[Problem] = field(default_factory=list)
    dry_run: bool = False

    @property
    def stored(self) -> int:
        return self.created + self.updated + self.unchanged

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        verb = "would be" if self.dry_run else "were"
        parts = [f"{self.created} new", f"{self.updated} updated", f"{self.unchanged} unchanged"]
        text = f"{', '.join(parts)} ({self.stored} rows {verb} stored)"
        if self.kept_status:
            text += f"; {self.kept_status} kept their status (an import never re-activates a lost address)"
        if self.suppressed:
            text += f"; {self.suppressed} suppressed addresses skipped"
        if self.problems:
            text += f"; {len(self.problems)} bad rows"
        return text


def _chunks(rows: Iterable[Row | Problem], report: ImportReport, size: int) -> Iterator[list[Row]]:
    chunk: list[Row] = []
    for row in rows:
        if isinstance(row, Problem):
            report.problems.append(row)
            continue
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def import_subscribers(
    session: Session,
    text: str,
    regions: RegionIndex,
    *,
    dry_run: bool = False,
    source: str = "import",
    actor: str = audit.CLI_ACTOR,
    progress: Callable[[int], None] | None = None,
    chunk_size: int = CHUNK,
) -> ImportReport:
    """Import CSV text; good rows are written in the session's transaction, bad ones reported.

    With `dry_run` every row is checked against the database exactly as a real import would, and the
    caller is expected to roll back (the CLI does).
    """
    report = ImportReport(dry_run=dry_run)
    region_ids = regions_by_code(session)
    sub = SUBSCRIBER
    subscription = SUBSCRIPTION
    now = utcnow()
    dialect = session.get_bind().dialect.name
    for chunk in _chunks(read_csv(text, regions), report, chunk_size):
        emails = [r.email for r in chunk]
        existing = {
            row.email: row
            for row in session.execute(
                sa.select(sub.c.id, sub.c.email, sub.c.name, sub.c.status, sub.c.timezone).where(
                    one_of(dialect, sub.c.email, emails)
                )
            )
        }
        hashes = {r.email: email_hash(r.email) for r in chunk}
        suppressed = set(
            session.scalars(
                sa.select(SUPPRESSION.c.email_hash).where(
                    one_of(dialect, SUPPRESSION.c.email_hash, hashes.values())
                )
            )
        )
        current_regions: dict[int, set[int]] = {}
        if existing:
            for sid, rid in session.execute(
                sa.select(subscription.c.subscriber_id, subscription.c.region_id).where(
                    one_of(dialect, subscription.c.subscriber_id, [e.id for e in existing.values()])
                )
            ):
                current_regions.setdefault(sid, set()).add(rid)

        new_rows: list[dict[str, Any]] = []
        new_regions: dict[str, tuple[str, ...]] = {}
        updates: list[dict[str, Any]] = []
        moved: list[int] = []
        region_sets: dict[int, set[int]] = {}
        for row in chunk:
            wanted = {region_ids[c] for c in row.regions}
            found = existing.get(row.email)
            if found is None:
                if hashes[row.email] in suppressed:
                    report.suppressed += 1
                    continue
                new_rows.append(
                    {
                        "email": row.email,
                        "email_hash": hashes[row.email],
                        "name": row.name,
                        "status": str(row.status),
                        "source": source,
                        "created_at": now,
                        "updated_at": now,
                        "confirmed_at": now if row.status == SubscriberStatus.ACTIVE else None,
                        "unsubscribed_at": now if row.status == SubscriberStatus.UNSUBSCRIBED else None,
                        "timezone": row.timezone,
                    }
                )
                new_regions[row.email] = row.regions
                continue
            status = row.status
            refused = hashes[row.email] in suppressed and status == SubscriberStatus.ACTIVE
            try:
                check_subscriber(found.status, status)
            except InvalidTransition:
                refused = True
            if refused and status != found.status:
                status = SubscriberStatus(found.status)
                report.kept_status += 1
            zone = row.timezone or found.timezone
            changed = found.name != row.name or found.status != status or found.timezone != zone
            if current_regions.get(found.id, set()) != wanted:
                region_sets[found.id] = wanted
                changed = True
            if changed:
                update: dict[str, Any] = {
                    "id": found.id,
                    "name": row.name,
                    "status": str(status),
                    "timezone": zone,
                    "updated_at": now,
                }
                if zone != found.timezone:
                    moved.append(found.id)
                if status != found.status and status == SubscriberStatus.UNSUBSCRIBED:
                    update["unsubscribed_at"] = now
                updates.append(update)
                report.updated += 1
            else:
                report.unchanged += 1
        report.created += len(new_rows)

        if new_rows:
            insert_many(session.connection(), sub, new_rows)
            for sid, email in session.execute(
                sa.select(sub.c.id, sub.c.email).where(one_of(dialect, sub.c.email, new_regions))
            ):
                region_sets[sid] = {region_ids[c] for c in new_regions[email]}
        if updates:
            session.execute(
                sa.update(sub).where(sub.c.id == sa.bindparam("_id")),
                [{**{k: v for k, v in u.items() if k != "id"}, "_id": u["id"]} for u in updates],
            )
        if moved:
            retime(session.connection(), moved, now)
        if region_sets:
            session.execute(
                sa.delete(subscription).where(one_of(dialect, subscription.c.subscriber_id, region_sets))
            )
            insert_many(
                session.connection(),
                subscription,
                [
                    {"subscriber_id": sid, "region_id": rid}
                    for sid, rids in region_sets.items()
                    for rid in rids
                ],
            )
        if progress:
            progress(len(chunk))
    if not dry_run:
        audit.record(
            session,
            actor,
            "subscribers.import",
            "subscriber",
            None,
            {
                "source": source,
                "created": report.created,
                "updated": report.updated,
                "bad_rows": len(report.problems),
            },
        )
    return report


def subscriber_regions(session: Session, subscriber_ids: Sequence[int]) -> dict[int, list[str]]:
    """Region codes per subscriber, in display order."""
    rows = session.exec(
        select(Subscription.subscriber_id, Region.code)
        .join(Region, col(Region.id) == col(Subscription.region_id))
        .where(col(Subscription.subscriber_id).in_(list(subscriber_ids)))
        .order_by(col(Region.position))
    ).all()
    result: dict[int, list[str]] = {sid: [] for sid in subscriber_ids}
    for sid, code in rows:
        result[sid].append(code)
    return result
