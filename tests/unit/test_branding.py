"""Branding from settings: logo, accent colour, give button, dateline and subject, with no template edits."""

from __future__ import annotations

from datetime import UTC, datetime

import lxml.html
import pytest

from newsletter.content.render import Renderer, personalize
from newsletter.content.types import BulletinContent, ItemContent, Recipient, Section
from newsletter.core.config import get_settings
from newsletter.core.errors import ConfigError
from newsletter.core.status import ItemKind
from newsletter.mail.links import Links

SENT = datetime(2026, 12, 6, 23, 30, tzinfo=UTC)  # already Monday 7 December in Auckland


def content(send_time: datetime | None = SENT) -> BulletinContent:
    items = (ItemContent(ItemKind.PRAY, "Pray for the team."),)
    return BulletinContent(
        "Weekly Prayer",
        "Weekly Prayer",
        "Verse",
        "Ref 1:1",
        (Section("africa", "Africa", items),),
        id=42,
        send_time=send_time,
    )


def render(settings, bulletin: BulletinContent | None = None):
    variant = Renderer(settings).variant(bulletin or content(), ["africa"])
    values = Links(settings).values(Recipient("ruth@example.org", "Ruth", 1, delivery_id=1, bulletin_id=42))
    html, text = personalize(variant, values)
    return variant, lxml.html.fromstring(html), text


def test_branding_settings_reach_both_parts(basic_settings, monkeypatch):
    monkeypatch.setenv("LOGO_URL", "https://charity.example/logo.png")
    monkeypatch.setenv("LOGO_ALT", "Charity & Co")
    monkeypatch.setenv("ACCENT_COLOUR", "#AB3C01")
    monkeypatch.setenv("DONATE_URL", "https://charity.example/give?src=email&x=1")
    monkeypatch.setenv("TIMEZONE", "Pacific/Auckland")
    monkeypatch.setenv("SUBJECT_TEMPLATE", "{title} – {date:%d %B %Y}")
    variant, doc, text = render(get_settings())
    assert [(i.get("src"), i.get("alt")) for i in doc.xpath("//img")] == [
        ("https://charity.example/logo.png", "Charity & Co")
    ]
    assert "#ab3c01" in doc.xpath("//h2[contains(@class, 'region')]")[0].get("style")
    give = doc.xpath("//td[contains(@class, 'button')]/a")[0]
    assert (give.get("href"), give.text) == ("https://charity.example/give?src=email&x=1", "Give to our work")
    assert doc.xpath("string(//p[@class='dateline'])") == "7 December 2026"
    assert "\n7 December 2026\n" in text and "https://charity.example/give?src=email&x=1" in text
    assert variant.subject == "Weekly Prayer – 07 December 2026"


def test_without_branding_the_email_has_no_logo_or_button(basic_settings):
    _, doc, _ = render(basic_settings)
    assert not doc.xpath("//img") and not doc.xpath("//td[contains(@class, 'button')]")
    assert "#1d4e89" in doc.xpath("//h2[contains(@class, 'region')]")[0].get("style")


def test_the_dateline_can_be_the_issue_number_or_nothing(basic_settings, monkeypatch):
    monkeypatch.setenv("DATELINE", "issue")
    monkeypatch.setenv("SUBJECT_TEMPLATE", "{title} (no. {issue})")
    variant, doc, _ = render(get_settings())
    assert doc.xpath("string(//p[@class='dateline'])") == "Issue no. 42"
    assert variant.subject == "Weekly Prayer (no. 42)"
    monkeypatch.setenv("DATELINE", "none")
    assert not render(get_settings())[1].xpath("//p[@class='dateline']")


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("ACCENT_COLOUR", "blue", "expected a colour like #1d4e89"),
        ("ACCENT_COLOUR", "#12345g", "expected a colour"),
        ("DONATE_URL", "javascript:alert(1)", "expected an http(s):// address"),
        ("LOGO_URL", "https://x.example/a.png", "LOGO_ALT is required with LOGO_URL"),
        ("SUBJECT_TEMPLATE", "{titel} {date:%d}", "cannot use '{titel} {date:%d}'"),
        ("SUBJECT_TEMPLATE", "{title", "cannot use '{title'"),
    ],
)
def test_bad_branding_stops_at_start_up_with_one_line(basic_settings, monkeypatch, name, value, words):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        get_settings()
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_an_empty_postal_address_is_warned_about(basic_settings, monkeypatch):
    assert basic_settings.sender_warnings == ["FROM_EMAIL is still the example address bulletin@example.org"]
    monkeypatch.setenv("ORG_POSTAL_ADDRESS", "  ")
    monkeypatch.setenv("FROM_EMAIL", "bulletin@charity.example")
    assert [w.split(":")[0] for w in get_settings().sender_warnings] == ["ORG_POSTAL_ADDRESS is empty"]
