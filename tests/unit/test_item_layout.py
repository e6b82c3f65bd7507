"""How an item looks in the email: a label only for prayer and praise, room on both sides, live links."""

from __future__ import annotations

import re

import lxml.html

from newsletter.content.render import Renderer, personalize
from newsletter.content.types import BulletinContent, ItemContent, Recipient, Section
from newsletter.core.status import ItemKind
from newsletter.mail.links import Links

STATEMENT = "IJM headquarters is located in the United States. More at https://www.ijm.org/about?a=1&b=2"


def render(settings) -> tuple[lxml.html.HtmlElement, str]:
    items = (ItemContent(ItemKind.PLAIN, STATEMENT), ItemContent(ItemKind.PRAY, "Pray for the team."))
    content = BulletinContent("Title", "Subject", "Verse", "Ref 1:1", (Section("global", "Global", items),))
    values = Links(settings).values(Recipient("ruth@example.org", "Ruth", 1, delivery_id=1, bulletin_id=1))
    html, text = personalize(Renderer(settings).variant(content, ["global"]), values)
    return lxml.html.fromstring(html), text


def test_a_plain_item_has_no_label_in_either_part(basic_settings):
    doc, text = render(basic_settings)
    cells = doc.xpath("//td[contains(@class, 'item ')]")
    assert [c.get("class") for c in cells] == ["item item-plain", "item item-pray"]
    assert not cells[0].xpath(".//p[contains(@class, 'label')]")
    assert cells[1].xpath("string(.//p[contains(@class, 'label')])") == "Pray"
    assert "[PRAY]   Pray for the team." in text
    statement = next(line for line in text.splitlines() if "IJM headquarters" in line)
    assert statement.startswith(" " * 9 + "IJM") and "[" not in statement


def test_item_text_has_padding_on_the_right_as_on_the_left(basic_settings):
    doc, _ = render(basic_settings)
    style = doc.xpath("//td[contains(@class, 'item-pray')]")[0].get("style")
    padding = re.search(r"padding:\s*([^;]+)", style).group(1).split()
    _top, right, _bottom, left = (padding * 4)[:4] if len(padding) == 1 else padding
    assert right == left and right != "0"


def test_a_bare_url_in_an_item_is_a_link_in_html_and_stands_whole_in_text(basic_settings):
    doc, text = render(basic_settings)
    links = doc.xpath("//div[@class='body']//a")
    assert [(a.get("href"), a.text) for a in links] == [("https://www.ijm.org/about?a=1&b=2",) * 2]
    assert text.count("https://www.ijm.org/about?a=1&b=2") == 1
