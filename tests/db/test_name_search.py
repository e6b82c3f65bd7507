"""Finding people by any word of their name, whatever the case and accents, on both databases."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from newsletter.audience.search import Filters, search_page
from newsletter.audience.subscribers import import_subscribers
from newsletter.content.regions import RegionIndex
from newsletter.core.dialect import bulk_subscriber_insert
from newsletter.core.models import SUBSCRIBER
from tests.factories import csv_for

PEOPLE = [
    ("priya@example.org", "Priya Nair"),
    ("anil@example.org", "Dr. Anil NAIR"),
    ("meera@example.org", "Meera Nair-Thomas"),
    ("jonas@example.org", "Jonas Müller"),
    ("grete@example.org", "Grete MULLER"),
    ("sean@example.org", "Seán O'Brien"),
    ("ada@example.org", "Ada Lovelace"),
]


def names(session, q: str, **filters: str) -> list[str]:
    page = search_page(session.connection(), Filters(q=q, **filters))
    session.commit()
    return sorted(row.name for row in page.rows)


def test_any_word_of_the_name_any_case_any_accent(session, make_subscriber):
    for email, name in PEOPLE:
        make_subscriber(email=email, name=name)
    assert names(session, "nair") == ["Dr. Anil NAIR", "Meera Nair-Thomas", "Priya Nair"]
    assert names(session, "NAIR") == names(session, "nair")
    assert names(session, "muller") == ["Grete MULLER", "Jonas Müller"]
    assert names(session, "müller") == ["Grete MULLER", "Jonas Müller"]
    assert names(session, "sean") == ["Seán O'Brien"] == names(session, "brien")
    assert names(session, "priya nair") == ["Priya Nair"]  # every word must match, in any order
    assert names(session, "nair priya") == ["Priya Nair"]
    assert names(session, "nai") == names(session, "nair")  # the last word may be typed in part
    assert names(session, "nair pri") == ["Priya Nair"]
    assert names(session, "nai priya") == []  # the others are whole words
    assert names(session, "thomas") == ["Meera Nair-Thomas"]


def test_query_syntax_is_text_and_never_an_error(session, make_subscriber):
    for email, name in PEOPLE:
        make_subscriber(email=email, name=name)
    for q in ['"nair', "nair OR ada", "nair*", "NOT ada", "nair:*", "(nair)", "a & b | !c", "ada'--", "*"]:
        page = search_page(session.connection(), Filters(q=q))
        session.commit()
        assert all("NAIR" in r.name.upper() or "ADA" in r.name.upper() for r in page.rows), q
    assert names(session, "nair OR ada") == []  # three words: nair, or, ada (nobody has all three)


def test_an_address_prefix_ending_in_the_last_code_point_is_searched_not_an_error(session, make_subscriber):
    make_subscriber(email="ada@example.org", name="Ada Lovelace")
    for q in ["ada@\U0010ffff", "\U0010ffff", "ada@ex\U0010ffff\U0010ffff"]:
        page = search_page(session.connection(), Filters(q=q))
        session.commit()
        assert page.rows == [], q
    assert [r.email for r in search_page(session.connection(), Filters(q="ada@ex")).rows] == [
        "ada@example.org"
    ]


def test_an_address_prefix_ending_before_the_surrogates_is_searched_not_an_error(session, make_subscriber):
    """U+D7FF's next code point is U+E000: U+D800 (a lone surrogate) reaches no database driver."""
    make_subscriber(email="ada@example.org", name="Ada Lovelace")
    for q in ["ada@\ud7ff", "ada@ex\ud7ff", "\ud7ff"]:  # /admin/subscribers?q=ada@%ED%9F%BF
        page = search_page(session.connection(), Filters(q=q))
        session.commit()
        assert page.rows == [], q


# Addresses around the code points a prefix's upper bound has to step over: stored directly, so that
# they need not be deliverable, only text.
EDGE_ADDRESSES = [
    "ada@example.org",
    "ada@exämple.org",
    "adb@example.org",
    "b@\ud7fe.org",
    "b@\ud7ff.org",
    "b@\ud7ff\ud7ff.org",
    "b@\ue000.org",
    "b@\uffff.org",
    "b@\U00010000.org",
    "b@\U0010ffff.org",
    "b@\U0010ffff\U0010ffff",
    "c@bücher.de",
    "\x7f@example.org",
]
_EDGE_CHARACTERS = "ab@.\x00\x7f\x80ä\ud7fe\ud7ff\ue000\uffff\U00010000\U0010ffff"
_stored_prefix = st.builds(lambda email, n: email[:n], st.sampled_from(EDGE_ADDRESSES), st.integers(1, 20))
_typed = st.one_of(
    _stored_prefix,
    st.tuples(_stored_prefix, st.text(alphabet=_EDGE_CHARACTERS, min_size=1, max_size=3)).map("".join),
    st.text(alphabet=_EDGE_CHARACTERS, min_size=1, max_size=6),
    st.text(min_size=1, max_size=8),
).filter(lambda q: q.strip() != "")


@pytest.fixture
def edge_addresses(engine):
    with engine.begin() as conn:
        conn.execute(
            sa.insert(SUBSCRIBER),
            [
                {"email": email, "email_hash": f"h{i}", "name": f"Edge {i}", "status": "active"}
                for i, email in enumerate(EDGE_ADDRESSES)
            ],
        )


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(q=_typed)
def test_an_address_search_finds_exactly_the_addresses_starting_with_any_text(session, edge_addresses, q):
    """Whatever is typed (a NUL, a code point next to the surrogates, the last code point): no error,
    and every stored address starting with the text (trimmed, in lower case), in address order."""
    text = q.strip().lower()
    page = search_page(session.connection(), Filters(q=q), mode="email")
    session.commit()
    assert [r.email for r in page.rows] == sorted(e for e in EDGE_ADDRESSES if e.startswith(text))


def test_renamed_and_deleted_people_are_found_by_their_current_name(session, make_subscriber):
    person = make_subscriber(email="x@example.org", name="Ruth Nair")
    session.execute(sa.update(SUBSCRIBER).where(SUBSCRIBER.c.id == person.id).values(name="Ruth Boaz"))
    session.commit()
    assert names(session, "nair") == [] and names(session, "boaz") == ["Ruth Boaz"]
    session.execute(sa.delete(SUBSCRIBER).where(SUBSCRIBER.c.id == person.id))
    session.commit()
    assert names(session, "boaz") == []


def test_word_search_pages_newest_first_and_respects_filters(session, make_subscriber):
    for n in range(7):
        make_subscriber(
            email=f"nair{n}@example.org", name=f"Nair {n}", regions=["africa" if n % 2 else "global"]
        )
    page = search_page(session.connection(), Filters(q="nair"), limit=3)
    seen = [r.name for r in page.rows]
    while page.next_cursor:
        page = search_page(session.connection(), Filters(q="nair"), page.next_cursor, mode=page.mode, limit=3)
        seen += [r.name for r in page.rows]
    session.commit()
    assert seen == [f"Nair {n}" for n in reversed(range(7))]
    assert names(session, "nair", region="africa") == ["Nair 1", "Nair 3", "Nair 5"]


def test_a_bulk_import_is_found_and_later_subscribers_still_are(session, settings, make_subscriber):
    """An import feeds the name index in one statement (SQLite) and leaves its row trigger in place."""
    rows = [(f"bulk{i}@example.org", f"Bulk Person{i} Okafor", ["africa"], "active") for i in range(300)]
    report = import_subscribers(session, csv_for(rows), RegionIndex.from_db(session, settings))
    assert report.ok and report.created == 300
    session.commit()
    make_subscriber(email="later@example.org", name="Chidi Okafor")
    newest = search_page(session.connection(), Filters(q="okafor"))
    session.commit()
    assert newest.rows[0].name == "Chidi Okafor" and newest.next_cursor is not None
    assert names(session, "person17 okafor") == ["Bulk Person17 Okafor"]  # the last word may be partial
    assert names(session, "person299 okafor") == ["Bulk Person299 Okafor"]


def test_a_failed_bulk_insert_keeps_the_name_index_trigger(session, engine, make_subscriber):
    make_subscriber(email="taken@example.org", name="Taken Name")
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn, bulk_subscriber_insert(conn):
        conn.execute(
            sa.insert(SUBSCRIBER),
            [{"email": "taken@example.org", "email_hash": "x", "name": "Duplicate", "status": "active"}],
        )
    make_subscriber(email="fresh@example.org", name="Fresh Zebedee")
    assert names(session, "zebedee") == ["Fresh Zebedee"]
