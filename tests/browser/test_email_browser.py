"""The bulletin email in a real browser engine (Debian's Chromium through Playwright): it fits a phone
without sideways scrolling and stays a 600 px column on a desktop. Screenshots land in test-output/
and the phone one in docs/screenshots/ for the README."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from newsletter.content.bulletins import parse_bulletin
from newsletter.content.render import Renderer, personalize
from newsletter.content.types import ItemContent, Recipient
from newsletter.core.config import Settings
from newsletter.core.status import ItemKind
from newsletter.mail.links import Links

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "test-output"
SCREENSHOTS = ROOT / "docs" / "screenshots"
LONG_URL = (
    "https://example.org/stories/2026/ghana-national-justice-conference-and-freedom-sunday?utm=bulletin"
)

pytestmark = [pytest.mark.browser]


@pytest.fixture
def email_html(basic_settings: Settings, sample_text: str) -> str:
    """All five regions, with the long words and URLs that push a narrow layout sideways."""
    content = parse_bulletin(sample_text, basic_settings)
    extra = ItemContent(
        ItemKind.PRAISE,
        f"Praise God for the conference report: {LONG_URL} and for "
        "Supercalifragilisticexpialidociouslylongwordwithoutanyspaces.",
    )
    sections = tuple(
        replace(s, items=(*s.items, extra)) if s.region_code == "africa" else s for s in content.sections
    )
    content = replace(content, sections=sections, id=1)
    variant = Renderer(basic_settings).variant(content, [s.region_code for s in content.sections])
    values = Links(basic_settings).values(Recipient("ruth@example.org", "Ruth", 1, bulletin_id=1))
    return personalize(variant, values)[0]


def open_at(browser, html: str, width: int):  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": width, "height": 900})
    # Nothing in the email may load from the network: block it, so a stray URL would show as broken.
    page.route("**/*", lambda route: route.abort())
    page.set_content(html, wait_until="load")
    return page


def test_no_horizontal_scroll_on_a_375px_phone(browser, email_html):
    page = open_at(browser, email_html, 375)
    try:
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        assert page.evaluate("document.body.scrollWidth") <= 375
        OUTPUT.mkdir(exist_ok=True)
        page.screenshot(path=str(OUTPUT / "email-375.png"), full_page=True)
        # The README's picture: the first screen and a half, which a reader takes in at a glance.
        page.screenshot(
            path=str(OUTPUT / "email-phone.png"), clip={"x": 0, "y": 0, "width": 375, "height": 1200}
        )
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(OUTPUT / "email-phone.png", SCREENSHOTS / "email-phone.png")
    finally:
        page.close()


@pytest.mark.parametrize("width", [600, 1024])
def test_the_content_column_is_at_most_600px(browser, email_html, width):
    page = open_at(browser, email_html, width)
    try:
        column = page.evaluate("document.querySelector('table.container').getBoundingClientRect().width")
        assert column <= 600
        if width > 600:
            assert column == 600  # fluid below, fixed at 600 above
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        if width == 600:
            OUTPUT.mkdir(exist_ok=True)
            page.screenshot(path=str(OUTPUT / "email-600.png"), full_page=True)
    finally:
        page.close()


def test_dark_mode_changes_the_colours(browser, email_html):
    page = browser.new_page(viewport={"width": 600, "height": 900}, color_scheme="dark")
    try:
        page.route("**/*", lambda route: route.abort())
        page.set_content(email_html, wait_until="load")
        card = page.evaluate("getComputedStyle(document.querySelector('td.card')).backgroundColor")
        assert card == "rgb(30, 30, 30)"
    finally:
        page.close()


def test_the_confirmation_email_fits_a_phone_too(browser, basic_settings):
    variant = Renderer(basic_settings).confirmation("naomi@example.org", "Naomi")
    values = Links(basic_settings).values(Recipient("naomi@example.org", "Naomi", 3))
    page = open_at(browser, personalize(variant, values)[0], 375)
    try:
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        OUTPUT.mkdir(exist_ok=True)
        page.screenshot(path=str(OUTPUT / "confirmation-375.png"), full_page=True)
    finally:
        page.close()
