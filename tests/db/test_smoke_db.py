from __future__ import annotations

from sqlmodel import select

from newsletter.core.models import Region


def test_regions_are_seeded_in_display_order(session):
    codes = [r.code for r in session.exec(select(Region).order_by(Region.position)).all()]
    assert codes == ["africa", "latin-america", "south-asia", "southeast-asia", "global"]


def test_factories(make_subscriber, make_bulletin):
    s = make_subscriber("Ada@Example.org", regions=["africa"])
    assert s.email == "ada@example.org"
    b = make_bulletin()
    assert b.id == 1
