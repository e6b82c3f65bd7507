"""Importing subscribers from CSV: good rows stored, bad rows reported by line, nothing re-activated."""

from __future__ import annotations

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given
from hypothesis import strategies as st
from sqlmodel import select

from newsletter.audience.subscribers import (
    Row,
    import_subscribers,
    normalize_email,
    read_csv,
    subscriber_regions,
)
from newsletter.content.regions import RegionIndex
from newsletter.core.config import DEFAULT_REGION_ALIASES, DEFAULT_REGIONS
from newsletter.core.errors import Problem
from newsletter.core.models import Subscriber, Suppression, email_hash
from newsletter.core.status import SubscriberStatus, SuppressionReason

REGIONS = RegionIndex.build(DEFAULT_REGIONS, DEFAULT_REGION_ALIASES)


def run_import(session, settings, text, **kwargs):
    report = import_subscribers(session, text, RegionIndex.from_db(session, settings), **kwargs)
    session.commit()
    return report


def stored(session):
    rows = session.exec(select(Subscriber).order_by(Subscriber.id)).all()
    regions = subscriber_regions(session, [r.id for r in rows])
    return {r.email: (r.name, r.status, regions[r.id]) for r in rows}


MESSY = (
    "\ufeffemail,name,regions\r\n"
    "ada@example.org,Ada,africa;South Asia\r\n"  # line 2: good
    "not-an-email,Bob,africa\r\n"  # line 3: invalid email
    "carol@example.org,Carol,Europe\r\n"  # line 4: unknown region
    "\r\n"  # line 5: blank, ignored
    'dan@example.org,"Dan\r\nBcc: evil@example.org",global\r\n'  # line 6: name with a line break,
    # line 7: read again as a row of its own (an invalid email), in case the quote swallowed rows
    "ADA@example.org,Ada again,global\r\n"  # line 8: duplicate of line 2
    "erin@example.org,Erin,\r\n"  # line 9: good, all regions
)


def test_bad_rows_are_reported_by_line_and_the_good_ones_stored(session, settings):
    report = run_import(session, settings, MESSY)
    assert [(p.line, p.message.split(" ")[0]) for p in report.problems] == [
        (3, "invalid"),
        (4, "unknown"),
        (6, "the"),
        (7, "invalid"),
        (8, "duplicate"),
    ]
    assert "line break" in report.problems[2].message
    assert "line 2" in report.problems[4].message
    assert stored(session) == {
        "ada@example.org": ("Ada", "active", ["africa", "south-asia"]),
        "erin@example.org": ("Erin", "active", list(REGIONS.codes)),
    }
    assert (report.created, report.updated) == (2, 0)
    assert not report.ok


def test_reimport_updates_by_email(session, settings):
    run_import(session, settings, "email,name,regions\nada@example.org,Ada,africa\n")
    report = run_import(session, settings, "email,name,regions\nAda@Example.org,Ada L.,global;africa\n")
    assert (report.created, report.updated) == (0, 1)
    assert stored(session) == {"ada@example.org": ("Ada L.", "active", ["africa", "global"])}
    again = run_import(session, settings, "email,name,regions\nada@example.org,Ada L.,africa;global\n")
    assert (again.updated, again.unchanged) == (0, 1)


def test_an_import_never_reactivates_a_lost_address(session, settings):
    run_import(
        session,
        settings,
        "email,name,regions,status\n"
        "u@example.org,U,africa,unsubscribed\nb@example.org,B,africa,bounced\n"
        "c@example.org,C,africa,complained\n",
    )
    report = run_import(
        session,
        settings,
        "email,name,regions,status\nu@example.org,U2,global,active\nb@example.org,B,africa,\n"
        "c@example.org,C,africa,active\n",
    )
    assert report.kept_status == 3
    assert {e: s for e, (_, s, _) in stored(session).items()} == {
        "u@example.org": "unsubscribed",
        "b@example.org": "bounced",
        "c@example.org": "complained",
    }
    assert stored(session)["u@example.org"][0] == "U2"  # other changes still apply


def test_a_suppressed_address_is_never_stored(session, settings):
    session.add(Suppression(email_hash=email_hash("gone@example.org"), reason=SuppressionReason.ERASED))
    session.commit()
    report = run_import(session, settings, "email,name\ngone@example.org,Gone\nnew@example.org,New\n")
    assert report.suppressed == 1
    assert list(stored(session)) == ["new@example.org"]


def test_dry_run_reports_the_same_and_stores_nothing(session, settings):
    report = import_subscribers(session, MESSY, RegionIndex.from_db(session, settings), dry_run=True)
    session.rollback()
    assert (report.created, len(report.problems)) == (2, 5)
    assert stored(session) == {}


def test_the_header_is_checked(session, settings):
    report = run_import(session, settings, "mail,name\nada@example.org,Ada\n")
    assert report.problems == [Problem(1, report.problems[0].message)]
    assert "no email column" in report.problems[0].message
    assert run_import(session, settings, "").problems[0].line == 0


def test_the_demo_list_imports_cleanly(session, settings):
    from newsletter.core.config import default_subscribers_dir

    report = run_import(session, settings, (default_subscribers_dir() / "sample.csv").read_text("utf-8"))
    assert report.ok and report.created >= 250
    statuses = {s for _, s, _ in stored(session).values()}
    assert {"active", "unsubscribed", "pending"} <= statuses


# --- property tests ---------------------------------------------------------------------------

ascii_local = st.from_regex(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,70}", fullmatch=True)
domains = st.from_regex(r"([A-Za-z0-9-]{1,20}\.){1,3}[A-Za-z0-9]{1,8}", fullmatch=True)


@given(local=ascii_local, domain=domains)
def test_the_fast_path_agrees_with_email_validator(local, domain):
    address = f"{local}@{domain}"
    try:
        expected = validate_email(address, check_deliverability=False).normalized.lower()
    except EmailNotValidError:
        expected = None
    try:
        got = normalize_email(address)
    except ValueError:
        got = None
    assert got == expected


cell = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)


@given(st.lists(st.tuples(cell, cell, cell, cell), max_size=15), st.booleans())
def test_any_csv_gives_rows_or_line_numbered_problems(rows, crlf):
    import csv
    import io
    import re

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n" if crlf else "\n")
    writer.writerow(["email", "name", "regions", "status"])
    writer.writerows(rows)
    text = out.getvalue()
    last_line = len(re.split(r"\r\n|\r|\n", text))  # lone CRs break lines too, as in an editor
    seen = set()
    for result in read_csv(text, REGIONS):
        if isinstance(result, Problem):
            assert 1 <= result.line <= last_line and result.message
        else:
            assert isinstance(result, Row)
            assert result.email not in seen and result.regions
            assert "\n" not in result.name and "\r" not in result.name
            seen.add(result.email)
            assert SubscriberStatus(result.status)


def test_timezone_column_is_checked_against_zoneinfo_with_line_numbers(session, settings):
    text = (
        "email,name,regions,timezone\n"
        "a@example.org,A,africa,Africa/Nairobi\n"
        "b@example.org,B,africa,Mars/Olympus\n"
        "c@example.org,C,africa,\n"
        "d@example.org,D,africa,europe/london\n"
    )
    report = run_import(session, settings, text)
    assert [(p.line, "unknown time zone" in p.message) for p in report.problems] == [(3, True), (5, True)]
    zones = dict(session.exec(select(Subscriber.email, Subscriber.timezone)).all())
    assert zones == {"a@example.org": "Africa/Nairobi", "c@example.org": None}
    # Re-importing without the column, or with an empty cell, keeps the zone; a new zone replaces it.
    run_import(session, settings, "email,name,regions\na@example.org,A,africa\n")
    run_import(session, settings, "email,name,regions,timezone\nc@example.org,C,africa,Asia/Manila\n")
    session.expire_all()
    zones = dict(session.exec(select(Subscriber.email, Subscriber.timezone)).all())
    assert zones == {"a@example.org": "Africa/Nairobi", "c@example.org": "Asia/Manila"}


UNCLOSED = (
    "email,name,regions\n"
    "ann@example.org,Ann,africa\n"
    'bob@example.org,"Bob,africa\n'  # line 3: a quote that never closes
    "cat@example.org,Cat,africa\n"
    "dan@example.org,Dan,africa\n"
    'eve@example.org,Eve "E",africa\n'  # a quote inside a field that does not start with one is text
    "fay@example.org,Fay,africa\n"
)


def test_a_quote_that_never_closes_loses_only_its_own_line(session, settings):
    report = run_import(session, settings, UNCLOSED)
    assert [p.line for p in report.problems] == [3]
    assert "quote opened on line 3 is not closed" in report.problems[0].message
    assert {e: n for e, (n, _, _) in stored(session).items()} == {
        "ann@example.org": "Ann",
        "cat@example.org": "Cat",
        "dan@example.org": "Dan",
        "eve@example.org": 'Eve "E"',
        "fay@example.org": "Fay",
    }


def test_a_quote_open_at_the_end_of_the_file_is_reported():
    text = 'email,name,regions\nann@example.org,Ann,africa\nbob@example.org,"Bob,africa\n'
    results = list(read_csv(text, REGIONS))
    assert [r.line for r in results if isinstance(r, Row)] == [2]
    assert [p.line for p in results if isinstance(p, Problem)] == [3]


def test_a_quote_running_past_the_field_size_limit_stops_nothing():
    # The unclosed quote on line 2 swallows more than csv's 128 KiB field limit: csv.Error mid-file.
    rows = "".join(f"person{i}@example.org,Person {i},africa\n" for i in range(6000))
    text = 'email,name,regions\nann@example.org,"Ann,africa\n' + rows
    results = list(read_csv(text, REGIONS))
    assert [(p.line, "quote opened on line 2" in p.message) for p in results if isinstance(p, Problem)] == [
        (2, True)
    ]
    assert [r.line for r in results if isinstance(r, Row)] == list(range(3, 6003))


def test_a_quote_open_at_the_end_past_the_field_size_limit_is_reported_not_raised():
    text = 'email,name,regions\nann@example.org,Ann,africa\nbob@example.org,"' + "x" * 131_072
    results = list(read_csv(text, REGIONS))
    assert [r.line for r in results if isinstance(r, Row)] == [2]
    assert [p.line for p in results if isinstance(p, Problem)] == [3]


@pytest.mark.timeout(30)
def test_a_file_of_quotes_that_never_close_is_read_in_time_linear_in_its_lines():
    """Each line opens a quote that runs to the end of the file. Reading each swallowed line again
    from every line would be quadratic (minutes for this file, hours for an upload at the size cap);
    a record may take at most MAX_RECORD_LINES lines, so each line is read a bounded number of times."""
    n = 40_000  # about a second; read again from every line, minutes
    text = "email,name,regions\n" + 'a","\n' * n
    problems = [p.line for p in read_csv(text, REGIONS) if isinstance(p, Problem)]
    assert problems == list(range(2, n + 2))


def test_a_quoted_line_break_in_a_valid_row_still_reads_as_one_row():
    text = 'email,name,regions\n"ann@example.org\n",Ann,"africa;\nglobal"\nbob@example.org,Bob,africa\n'
    assert [(r.line, r.email) for r in read_csv(text, REGIONS) if isinstance(r, Row)] == [
        (2, "ann@example.org"),
        (5, "bob@example.org"),
    ]


_safe = st.text(alphabet="ab ", max_size=4)
_name = st.one_of(_safe, st.text(alphabet="ab \"',;", max_size=6))
_regions = st.sampled_from(["africa", "", "Europe", '"africa', 'africa"', '"africa;global"', "global"])
_email = st.sampled_from(["{}", '"{}"', '"{}', '{}"', "not-an-email", ""])
_line = st.one_of(st.tuples(_email, _name, _regions), st.just(None))  # None: a blank line


@given(st.lists(_line, max_size=25), st.booleans())
def test_no_line_of_a_file_is_ever_silently_lost(lines, crlf):
    """Whatever quotes a file holds, each non-blank line is imported (as the row written on it) or
    reported, by its own line number; and a clean line is always imported."""
    end = "\r\n" if crlf else "\n"
    written = ["email,name,regions"]
    for i, spec in enumerate(lines):
        written.append("" if spec is None else ",".join([spec[0].format(f"p{i}@example.org"), *spec[1:]]))
    results = list(read_csv(end.join(written) + end, REGIONS))
    rows = {r.line: r for r in results if isinstance(r, Row)}
    problems = [p.line for p in results if isinstance(p, Problem)]
    assert len(problems) == len(set(problems)) and not set(problems) & set(rows)
    for i, spec in enumerate(lines):
        line = i + 2
        if line in rows:
            assert rows[line].email == f"p{i}@example.org"
        elif written[i + 1].replace(",", "").strip():  # a line of empty cells is a blank line
            assert line in problems, (line, written[i + 1])
        clean = spec is not None and spec[0] == "{}" and '"' not in spec[1] + spec[2] and "," not in spec[1]
        if clean and spec[2] in {"africa", "", "global"}:
            assert line in rows, (line, written[i + 1])


def suppression_reasons(session):
    return {s.email: s.reason for s in session.exec(select(Suppression).order_by(Suppression.id)).all()}


def test_a_lost_status_from_an_import_is_suppressed_like_a_staff_edit(session, settings):
    run_import(
        session,
        settings,
        "email,name,regions,status\n"
        "u@example.org,U,africa,unsubscribed\nb@example.org,B,africa,bounced\n"
        "c@example.org,C,africa,complained\nok@example.org,Ok,africa,active\n",
    )
    run_import(session, settings, "email,name,regions,status\nok@example.org,Ok,africa,bounced\n")
    assert suppression_reasons(session) == {
        "u@example.org": SuppressionReason.UNSUBSCRIBE,
        "b@example.org": SuppressionReason.BOUNCE,
        "c@example.org": SuppressionReason.COMPLAINT,
        "ok@example.org": SuppressionReason.BOUNCE,
    }
    # A stronger status later strengthens the suppression too; a weaker one never weakens it.
    run_import(
        session,
        settings,
        "email,name,regions,status\nu@example.org,U,africa,complained\nc@example.org,C,africa,unsubscribed\n",
    )
    assert stored(session)["u@example.org"][1] == "complained"
    reasons = suppression_reasons(session)
    assert (reasons["u@example.org"], reasons["c@example.org"]) == (
        SuppressionReason.COMPLAINT,
        SuppressionReason.COMPLAINT,
    )


def test_an_import_never_brings_a_lost_address_back_by_way_of_pending(session, settings):
    run_import(session, settings, "email,name,regions,status\nu@example.org,U,africa,unsubscribed\n")
    pending = run_import(session, settings, "email,name,regions,status\nu@example.org,U,africa,pending\n")
    active = run_import(session, settings, "email,name,regions,status\nu@example.org,U,africa,active\n")
    assert (pending.kept_status, active.kept_status) == (1, 1)
    assert stored(session)["u@example.org"][1] == "unsubscribed"
    assert suppression_reasons(session) == {"u@example.org": SuppressionReason.UNSUBSCRIBE}
