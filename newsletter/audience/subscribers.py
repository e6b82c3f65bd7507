"""Subscribers: address normalisation, the CSV import format, and bulk import.

The import format (documented for volunteers in `subscribers/README.md`)::

    email,name,regions,status,timezone
    ada@example.org,Ada Lovelace,africa;South Asia,active,Africa/Nairobi

`regions` are codes or names separated by `;` (empty means all regions); `status` is optional
(default `active`); `timezone` is optional, an IANA name (empty: keep the subscriber's zone, or for a
new subscriber the default `TIMEZONE`). Re-importing an address updates it. An import never re-activates an address that
unsubscribed, bounced or complained (not even by way of `pending`: it keeps its status), and never stores
an address that is suppressed. A row stored as unsubscribed, bounced or complained is suppressed as
`SUPPRESSION_FOR_STATUS` says, exactly as a staff edit or an ESP event would suppress it.

Reading (`read_csv`) is pure and yields each row or a line-numbered problem; `import_subscribers`
writes the good rows in chunks with a handful of statements per chunk, never one per row.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import idna
from email_validator import EmailNotValidError, validate_email
from sqlmodel import Session

from newsletter.audience import queries, suppressions
from newsletter.audience.queries import subscriber_regions as subscriber_regions
from newsletter.audience.timezones import retime
from newsletter.content.queries import region_ids as regions_by_code
from newsletter.content.regions import RegionIndex
from newsletter.core import audit
from newsletter.core.errors import InvalidTransition, Problem
from newsletter.core.models import email_hash, utcnow
from newsletter.core.status import (
    SUPPRESSION_FOR_STATUS,
    SubscriberStatus,
    SuppressionReason,
    check_subscriber,
)
from newsletter.core.zones import check_zone
from newsletter.mail.message import ascii_address

COLUMNS = ("email", "name", "regions", "status", "timezone")
REQUIRED_COLUMNS = ("email",)
CHUNK = 2000
MAX_NAME = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")

# A conservative subset of what email-validator accepts, for the common all-ASCII address: dot-atom
# local part, LDH labels and an alphabetic TLD. Anything else goes through email-validator in full.
# tests/db/test_subscribers_import.py checks (property test) that this never accepts what email-validator
# refuses.
_SIMPLE_EMAIL = re.compile(
    r"(?P<local>[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*)"
    r"@(?P<domain>(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63})"
)
_SPECIAL_USE_TLDS = {"arpa", "invalid", "local", "localhost", "onion", "test", "internal", "home", "lan"}


def normalize_email(raw: str) -> str:
    """The address as stored: validated (syntax only, no DNS) and lower-cased; ValueError says why not.

    An internationalised domain is stored as typed: `carol@bücher.de` in its Unicode form, the
    Punycode spelling `carol@xn--bcher-kva.de` as ASCII. Folding one into the other would change the
    hash (`core.models.email_hash`) of addresses already stored, and of erased ones, whose address is
    gone and cannot be re-hashed: that needs a migration with the lookups of both spellings.
    """
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


def spellings(email: str) -> list[str]:
    """Every stored form of the mailbox `email` names, its own first: an internationalised domain is
    stored as typed (`normalize_email`), so `carol@bücher.de` and `carol@xn--bcher-kva.de` are two
    spellings of one mailbox. What an ESP reports is the ASCII one, since that is what it was given
    (`esp_address`); the subscriber is stored with the Unicode one. An address that does not validate
    has only itself; a domain IDNA 2008 refuses has no other spelling."""
    try:
        stored = normalize_email(email)
    except ValueError:
        return [email]
    local, _, domain = stored.rpartition("@")
    try:
        if not domain.isascii():
            other = ascii_address(stored)
        elif any(label.startswith("xn--") for label in domain.split(".")):
            other = f"{local}@{idna.decode(domain)}"
        else:
            return [stored]
        other = normalize_email(other)
    except (idna.IDNAError, UnicodeError, ValueError):
        return [stored]
    return [stored] if other == stored else [stored, other]


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


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
"""What makes a spreadsheet read a cell as a formula (OWASP, "CSV Injection")."""
CSV_BOM = "\ufeff"
"""Written first, so that Excel reads the export as UTF-8 (accented names show correctly)."""


def csv_cell(value: str) -> str:
    """A cell a spreadsheet shows as text: a value that would start a formula (after any quotes) gets
    one more leading `'`. `csv_cell_value` takes exactly that one away, so export → import is exact."""
    return "'" + value if value.lstrip("'").startswith(FORMULA_START) else value


def csv_cell_value(cell: str) -> str:
    """The value `csv_cell` wrote (the inverse: one leading `'` less before a formula character)."""
    return cell[1:] if cell.startswith("'") and cell.lstrip("'").startswith(FORMULA_START) else cell


def export_csv(
    rows: Iterable[Sequence[str]], *, bom: bool = True, chunk_chars: int = 64 * 1024
) -> Iterator[str]:
    """`rows` as CSV text in chunks: a UTF-8 BOM first (unless `bom` is false: a pipe, not a file),
    every cell through `csv_cell`."""
    buffer = io.StringIO()
    if bom:
        buffer.write(CSV_BOM)
    writer = csv.writer(buffer, lineterminator="\n")
    for row in rows:
        writer.writerow([csv_cell(c) for c in row])
        if buffer.tell() > chunk_chars:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


MAX_RECORD_LINES = 20
"""The most physical lines one record may take. No field of the format may hold a line break, so a longer
record is a quote that never closed; the cap keeps re-reading what it swallowed linear in the file's size
(a file of lines each opening a quote would otherwise be read again from every line: quadratic)."""


class _Lines:
    """The file's physical lines, handed to `csv.reader` one at a time. `at` is how many it has taken,
    so a record's line span is known, and moving `at` back re-reads lines a bad record swallowed.
    `stop` ends the lines one record may take (`begin_record`)."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.at = 0
        self.stop = len(lines)

    def begin_record(self) -> int:
        """Start a record at `at` (returned), which may take at most MAX_RECORD_LINES lines."""
        self.stop = min(len(self.lines), self.at + MAX_RECORD_LINES)
        return self.at

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if self.at >= self.stop:
            raise StopIteration
        self.at += 1
        return self.lines[self.at - 1]


HEADER = "email,name,regions[,status][,timezone]"


def read_csv(text: str, regions: RegionIndex) -> Iterator[Row | Problem]:
    """Each data row as a `Row`, or a `Problem` naming its line. A problem at line 0 concerns the file.

    No line is ever dropped unreported. A record may run over several lines (a quoted field with a line
    break), but only as a valid row whose later lines are not rows by themselves: anything else is a quote
    that never closed (or one that closed by chance, lines further on). That record is reported at its
    first line and the lines after it are read again on their own, so the rows it swallowed are imported
    or reported, one by one. A `csv.Error` (such a quote running past the field size limit) is handled
    the same way, never by stopping.
    """
    # newline="": split at \n, \r\n and a lone \r, exactly as csv.reader and `reader.line_num` do.
    source = _Lines(list(io.StringIO(text.lstrip(CSV_BOM), newline="")))
    reader = csv.reader(source)
    try:
        header = next(reader)
    except StopIteration:
        yield Problem(0, f"the file is empty; expected a header line: {HEADER}")
        return
    except csv.Error as exc:
        yield Problem(1, f"unreadable header: {exc}")
        return
    columns = [h.strip().lower() for h in header]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        yield Problem(1, f"the header has no {', '.join(missing)} column; expected {HEADER}")
        return
    unknown = [c for c in columns if c and c not in COLUMNS]
    if unknown:
        yield Problem(1, f"unknown column(s) {', '.join(unknown)}; expected {HEADER}")
        return
    check = _row_checker(columns, regions)
    seen: dict[str, int] = {}
    while True:
        first = source.begin_record()  # index of the record's first line; its line number is first + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            taken = source.at - first
            source.at = first + 1  # read on from the next line, never stop
            yield Problem(first + 1, _unclosed(first + 1) if taken > 1 else f"unreadable CSV: {exc}")
            continue
        result = check(fields, first + 1, seen)
        taken = source.at - first
        record = source.lines[first : source.at] if taken > 1 or source.at == len(source.lines) else []
        if (taken > 1 or (record and _open_at_end(record))) and not _stands(record, result, check, seen):
            source.at = first + 1
            if isinstance(result, Problem) and _well_formed(record):
                yield result  # e.g. a name with a line break: that is the problem with this line
            else:
                yield Problem(first + 1, _unclosed(first + 1))
            continue
        if isinstance(result, Row):
            seen[result.email] = result.line
        if result is not None:
            yield result


def _unclosed(line: int) -> str:
    return (
        f"a quote opened on line {line} is not closed (or closes inside its field); "
        "the lines after it are read as rows of their own"
    )


def _open_at_end(lines: list[str]) -> bool:
    """Whether a quoted field is still open after `lines` (the file ends inside it): a line fed after
    them would be read into the same record."""
    probe = _Lines([*lines, "\n"])
    try:
        next(csv.reader(probe), None)
    except csv.Error:  # the field, one character longer, passes the field size limit: still open
        return True
    return probe.at > len(lines)


def _well_formed(lines: list[str]) -> bool:
    """Whether the lines are one record even read strictly: every quoted field closes just before a
    comma or the end of a line, and before the end of the file."""
    try:
        next(csv.reader(lines, strict=True))
    except (csv.Error, StopIteration):
        return False
    return True


def _stands(
    lines: list[str],
    result: Row | Problem | None,
    check: Callable[[list[str], int, dict[str, int]], Row | Problem | None],
    seen: dict[str, int],
) -> bool:
    """Whether a record over several lines is a legitimate quoted line break: a well-formed valid row
    none of whose later lines reads as a row by itself (else the quote swallowed those rows). A blank
    record (only quotes, commas and spaces) stands too: it cannot hide a row."""
    if isinstance(result, Problem) or not _well_formed(lines):
        return False
    if result is None:
        return True
    for offset, line in enumerate(lines[1:], start=1):
        try:
            fields = next(csv.reader([line]), [])
        except csv.Error:
            continue
        if isinstance(check(fields, result.line + offset, seen), Row):
            return False
    return True


def _row_checker(
    columns: list[str], regions: RegionIndex
) -> Callable[[list[str], int, dict[str, int]], Row | Problem | None]:
    """Checks one record's fields against the header `columns`: a `Row`, a `Problem` at `line`, or None
    for a blank record. `seen` (address → line, of the rows taken so far) is read, never written."""
    # Position of each column, or a position past any row (read as empty) when the column is absent.
    absent = len(columns)
    email_at, name_at, regions_at, status_at, zone_at = (
        columns.index(c) if c in columns else absent for c in COLUMNS
    )
    parse_regions = _region_parser(regions)
    statuses = {s.value: s for s in SubscriberStatus}

    def check(fields: list[str], line: int, seen: dict[str, int]) -> Row | Problem | None:
        if not any(f.strip() for f in fields):
            return None  # blank lines are tolerated
        if len(fields) > absent:
            return Problem(line, f"{len(fields)} fields, but the header has {absent}")
        fields = [csv_cell_value(f) for f in fields] + [""] * (absent + 1 - len(fields))
        try:
            email = normalize_email(fields[email_at])
        except ValueError as exc:
            return Problem(line, f"invalid email {fields[email_at].strip()!r}: {exc}")
        if email in seen:
            return Problem(line, f"duplicate of {email} on line {seen[email]}")
        try:
            name = validate_name(fields[name_at])
        except ValueError as exc:
            return Problem(line, str(exc))
        codes = parse_regions(fields[regions_at])
        if isinstance(codes, str):
            return Problem(line, f"unknown region {codes!r} (known: {', '.join(regions.codes)})")
        raw_status = fields[status_at].strip().lower() or SubscriberStatus.ACTIVE
        status = statuses.get(raw_status)
        if status is None:
            return Problem(line, f"unknown status {raw_status!r} (allowed: {', '.join(statuses)})")
        zone = fields[zone_at].strip() or None
        if zone is not None:
            try:
                zone = check_zone(zone)
            except ValueError as exc:
                return Problem(line, str(exc))
        return Row(line, email, name, codes, status, zone)

    return check


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
        parts = [f"{self.created} new", f"{self.updated} updated", f"{self.unchanged} unchanged"]
        rows = f"{self.stored} row" if self.stored == 1 else f"{self.stored} rows"
        verb = (
            ("would be" if self.dry_run else "was")
            if self.stored == 1
            else ("would be" if self.dry_run else "were")
        )
        text = f"{', '.join(parts)} ({rows} {verb} stored)"
        if self.kept_status:
            text += f"; {self.kept_status} kept their status (an import never re-activates a lost address)"
        if self.suppressed:
            text += f"; {self.suppressed} suppressed addresses skipped"
        if self.problems:
            bad = len(self.problems)
            text += f"; {bad} bad row" if bad == 1 else f"; {bad} bad rows"
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


@dataclass
class _ChunkPlan:
    """What one chunk of rows does to the database, decided before any statement runs."""

    new_rows: list[dict[str, Any]] = field(default_factory=list)
    new_regions: dict[str, tuple[str, ...]] = field(default_factory=dict)
    updates: list[dict[str, Any]] = field(default_factory=list)
    region_sets: dict[int, set[int]] = field(default_factory=dict)
    moved: list[int] = field(default_factory=list)
    """Known subscribers whose time zone changes: their deliveries not yet due move with them."""
    suppress: list[tuple[str, SuppressionReason, str]] = field(default_factory=list)
    """(email, reason, note) for rows stored with a status that means "never mail again"
    (`SUPPRESSION_FOR_STATUS`); `suppressions.add_many` adds them, or raises a weaker reason."""


def _new_row(row: Row, digest: str, source: str, now: datetime) -> dict[str, Any]:
    return {
        "email": row.email,
        "email_hash": digest,
        "name": row.name,
        "status": str(row.status),
        "source": source,
        "created_at": now,
        "updated_at": now,
        "confirmed_at": now if row.status == SubscriberStatus.ACTIVE else None,
        "unsubscribed_at": now if row.status == SubscriberStatus.UNSUBSCRIBED else None,
        "timezone": row.timezone,
    }


def _kept_status(found: Any, row: Row, suppressed: bool) -> SubscriberStatus:
    """The status an import may give a known address: the row's, unless the lifecycle forbids the move,
    a lost address (unsubscribed, bounced, complained) would become mailable again, or a suppressed
    address would become active (then it keeps its own).

    The lifecycle lets an unsubscribed address go back to `pending`, but only for the person confirming
    again; from an import, `pending` would be one step from `active` (the next import), so it is refused."""
    try:
        check_subscriber(found.status, row.status)
    except InvalidTransition:
        return SubscriberStatus(found.status)
    if found.status in SUPPRESSION_FOR_STATUS and row.status not in SUPPRESSION_FOR_STATUS:
        return SubscriberStatus(found.status)
    if suppressed and row.status == SubscriberStatus.ACTIVE:
        return SubscriberStatus(found.status)
    return row.status


def _suppress_lost(plan: _ChunkPlan, email: str, status: SubscriberStatus, source: str) -> None:
    """Plan the suppression a stored status such as `bounced` calls for (one rule with staff edits and
    ESP events), so that no import leaves an unsubscribed address unsuppressed."""
    reason = SUPPRESSION_FOR_STATUS.get(status)
    if reason is not None:
        plan.suppress.append((email, reason, f"status {status} in {source}"))


def _plan_chunk(
    chunk: list[Row],
    known: queries.KnownAddresses,
    region_ids: dict[str, int],
    report: ImportReport,
    source: str,
    now: datetime,
) -> _ChunkPlan:
    plan = _ChunkPlan()
    for row in chunk:
        digest = known.hashes[row.email]
        found = known.existing.get(row.email)
        if found is None:
            if digest in known.suppressed:
                report.suppressed += 1
            else:
                plan.new_rows.append(_new_row(row, digest, source, now))
                plan.new_regions[row.email] = row.regions
                _suppress_lost(plan, row.email, row.status, source)
            continue
        status = _kept_status(found, row, digest in known.suppressed)
        _suppress_lost(plan, row.email, status, source)  # a suppression only ever gets stronger
        if status != row.status:
            report.kept_status += 1
        zone = row.timezone or found.timezone
        changed = found.name != row.name or found.status != status or found.timezone != zone
        wanted = {region_ids[c] for c in row.regions}
        if known.regions.get(found.id, set()) != wanted:
            plan.region_sets[found.id] = wanted
            changed = True
        if not changed:
            report.unchanged += 1
            continue
        update: dict[str, Any] = {"id": found.id, "name": row.name, "status": str(status), "updated_at": now}
        update["timezone"] = zone
        if zone != found.timezone:
            plan.moved.append(found.id)
        if status != found.status and status == SubscriberStatus.UNSUBSCRIBED:
            update["unsubscribed_at"] = now
        plan.updates.append(update)
        report.updated += 1
    report.created += len(plan.new_rows)
    return plan


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
    now = utcnow()
    added = 0
    for chunk in _chunks(read_csv(text, regions), report, chunk_size):
        known = queries.known_addresses(session, {r.email: email_hash(r.email) for r in chunk})
        plan = _plan_chunk(chunk, known, region_ids, report, source, now)
        created = {
            sid: {region_ids[c] for c in plan.new_regions[email]}
            for sid, email in queries.insert_subscribers(session, plan.new_rows).items()
        }
        queries.update_subscribers(session, plan.updates)
        retime(session.connection(), plan.moved, now)
        queries.replace_regions(session, plan.region_sets)
        queries.replace_regions(session, created, created=True)
        added += suppressions.add_many(session, plan.suppress)
        if progress:
            progress(len(chunk))
    if not dry_run:
        changes = {
            "source": source,
            "created": report.created,
            "updated": report.updated,
            "bad_rows": len(report.problems),
            "suppressions_added": added,
        }
        audit.record(session, actor, "subscribers.import", "subscriber", None, changes)
    return report
