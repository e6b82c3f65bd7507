"""Rendering: each subscriber gets the verse and exactly their regions, in a message that works
everywhere, with personal links that verify, rendered once per region set."""

from __future__ import annotations

import itertools
import re
import shutil
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import lxml.html
import pytest

from newsletter.content.archive import slug
from newsletter.content.bulletins import parse_bulletin
from newsletter.content.markdown import WIDTH, plain
from newsletter.content.render import Renderer, inline_css_marked, personalize, substitutions
from newsletter.content.types import PERSONAL_FIELDS, BulletinContent, ItemContent, Recipient, Section
from newsletter.core.config import Settings, get_settings
from newsletter.core.status import ItemKind
from newsletter.mail.links import Links
from newsletter.mail.tokens import Purpose, read_token

CODES = ["africa", "latin-america", "south-asia", "southeast-asia", "global"]
MIXES = [mix for n in range(1, len(CODES) + 1) for mix in itertools.combinations(CODES, n)]
SUBSCRIBER = 4242
BULLETIN = 17
GMAIL_CLIP_BYTES = 102 * 1000  # Gmail clips "over 102 KB"; count in thousands to stay on the safe side


@pytest.fixture
def content(basic_settings: Settings, sample_text: str) -> BulletinContent:
    return replace(parse_bulletin(sample_text, basic_settings), id=BULLETIN)


@pytest.fixture
def renderer(basic_settings: Settings) -> Renderer:
    return Renderer(basic_settings)


@pytest.fixture
def values(basic_settings: Settings) -> dict[str, str]:
    recipient = Recipient("ruth@example.org", "Ruth & Boaz", SUBSCRIBER, delivery_id=1, bulletin_id=BULLETIN)
    return Links(basic_settings).values(recipient)


def visible_text(html: str) -> str:
    """What a reader sees: the text of the body, whitespace collapsed (the hidden preheader dropped)."""
    doc = lxml.html.fromstring(html)
    for hidden in doc.xpath("//*[contains(@class, 'preheader')]"):
        hidden.drop_tree()
    return " ".join(doc.body.text_content().split())


def words(text: str) -> str:
    return " ".join(text.split())


def test_sample_has_all_five_regions(content):
    assert content.region_codes == tuple(CODES)


@pytest.mark.parametrize("mix", MIXES, ids=",".join)
def test_every_region_mix_gets_its_items_and_nothing_else(renderer, content, values, mix, basic_settings):
    variant = renderer.variant(content, set(mix))
    html, text = personalize(variant, values)
    seen_html, seen_text = visible_text(html), words(text)
    assert variant.regions == mix
    assert variant.key == ",".join(mix)
    for section in content.sections:
        wanted = section.region_code in mix
        for item in section.items:
            item_words = plain(item.body)
            assert (item_words in seen_html) is wanted, (section.region_code, item_words[:40])
            assert (item_words in seen_text) is wanted, (section.region_code, item_words[:40])
    # sections appear under their region's heading, in region order
    headings = [words(h.text_content()) for h in lxml.html.fromstring(html).xpath("//h2")]
    assert headings == [s.region_name for s in content.sections if s.region_code in mix]
    text_headings = [
        line for line in text.splitlines() if line in {s.region_name.upper() for s in content.sections}
    ]
    assert text_headings == [s.region_name.upper() for s in content.sections if s.region_code in mix]
    # both parts carry personal links that the web app will accept
    keys = basic_settings.secret_keys
    for part in (html, text):
        for path, purpose in (("unsubscribe", Purpose.UNSUBSCRIBE), ("preferences", Purpose.PREFERENCES)):
            tokens = re.findall(rf"http://127\.0\.0\.1:8000/{path}/([A-Za-z0-9_-]+)", part)
            assert tokens, f"no {path} link"
            for token in tokens:
                assert read_token(keys, token, purpose, max_age=timedelta(days=1)) == SUBSCRIBER
        # "View online" is the public archive page of exactly these regions: nothing personal in it.
        assert "/view/" not in part
        regions = "" if len(mix) == len(CODES) else "?regions=" + ",".join(mix)
        assert f"http://127.0.0.1:8000/archive/{BULLETIN}-{slug(content.title)}{regions}" in part


def test_the_scripture_and_title_open_every_variant(renderer, content, values):
    html, text = personalize(renderer.variant(content, ["south-asia"]), values)
    for part in (visible_text(html), words(text)):
        assert content.title in part
        assert content.scripture_text in part
        assert content.scripture_reference in part
        assert "Dear Ruth & Boaz," in part


def test_a_region_set_without_sections_is_never_rendered(renderer, content):
    with pytest.raises(ValueError):
        renderer.variant(content, {"antarctica"})
    with pytest.raises(ValueError):
        renderer.variant(content, [])


def test_regions_without_a_section_are_ignored_and_order_does_not_matter(renderer, content):
    a = renderer.variant(content, ["global", "antarctica", "africa"])
    b = renderer.variant(content, frozenset({"africa", "global"}))
    c = renderer.variant(content, "africa,global")
    assert a is b is c
    assert a.key == "africa,global"


def test_variants_are_cached_and_test_sends_are_kept_apart(renderer, content):
    real = renderer.variant(content, ["africa"])
    assert renderer.variant(content, ["africa"]) is real
    test = renderer.variant(content, ["africa"], test=True)
    assert test is not real
    assert test.subject == "[TEST] " + real.subject
    assert "TEST SEND" in visible_text(test.html) and "TEST SEND" in test.text
    assert "TEST SEND" not in real.html and "TEST SEND" not in real.text


def test_changed_content_is_rendered_again(renderer, content):
    before = renderer.variant(content, ["africa"])
    edited = replace(content, footer_note="Thank you for praying.")
    after = renderer.variant(edited, ["africa"])
    assert after is not before
    assert "Thank you for praying." in visible_text(after.html)


def test_styles_are_inlined_and_media_queries_kept(renderer, content):
    html = renderer.variant(content, CODES).html
    doc = lxml.html.fromstring(html)
    for element in doc.xpath("//h1 | //h2 | //td[contains(@class,'item')] | //div[@class='body']/p | //a"):
        assert "style" in element.attrib, lxml.html.tostring(element)[:80]
    assert doc.xpath("//div[@class='body']/p")[0].attrib["style"].count("font-size")
    style = " ".join(s.text for s in doc.xpath("//head/style"))
    assert "@media screen and (max-width" in style
    assert "@media (prefers-color-scheme: dark)" in style
    assert "!important" in style  # premailer's default strip_important would have broken the phone layout


def test_layout_is_accessible_and_self_contained(renderer, content):
    variant = renderer.variant(content, CODES)
    doc = lxml.html.fromstring(variant.html)
    assert doc.attrib["lang"] == "en"
    assert all(t.attrib.get("role") == "presentation" for t in doc.xpath("//table"))
    metas = {m.attrib.get("name"): m.attrib.get("content") for m in doc.xpath("//meta[@name]")}
    assert metas["color-scheme"] == "light dark"
    assert metas["supported-color-schemes"] == "light dark"
    assert "max-width:600px" in doc.xpath("//table[contains(@class,'container')]")[0].attrib["style"]
    assert not doc.xpath("//script | //link | //iframe | //form")
    assert "http" not in " ".join(s.text for s in doc.xpath("//style"))
    assert "-apple-system" in variant.html and "sans-serif" in variant.html


def test_preheader_is_hidden_and_starts_with_the_first_item(renderer, content):
    variant = renderer.variant(content, ["latin-america", "global"])
    doc = lxml.html.fromstring(variant.html)
    (preheader,) = doc.xpath("//div[@class='preheader']")
    assert "display:none" in preheader.attrib["style"]
    first_item = content.only({"latin-america"})[0].items[0].body
    assert variant.preheader.rstrip("…") in plain(first_item)
    assert preheader.text_content().startswith(variant.preheader)
    assert variant.preheader.startswith("Praise God that over 2,500")


def test_praise_and_prayer_items_look_different(renderer, content):
    variant = renderer.variant(content, ["latin-america", "africa"])
    doc = lxml.html.fromstring(variant.html)
    praise = doc.xpath("//td[contains(@class,'item-praise')]")
    pray = doc.xpath("//td[contains(@class,'item-pray')]")
    assert praise and pray
    assert praise[0].attrib["style"] != pray[0].attrib["style"]
    assert "Praise" in praise[0].text_content() and "Pray" in pray[0].text_content()
    assert "[PRAISE] Praise God" in variant.text and "[PRAY]   Pray for all" in variant.text


def test_footer_says_why_which_regions_how_to_leave_and_where_we_are(
    renderer, content, values, basic_settings
):
    html, text = personalize(renderer.variant(content, ["africa", "global"]), values)
    seen = visible_text(html)
    for part in (seen, words(text)):
        assert basic_settings.ORG_NAME in part
        assert "Africa and HQ & Global Partners" in part
        assert "ruth@example.org" in part
        assert basic_settings.ORG_POSTAL_ADDRESS in part
    anchors = {a.text_content(): a.attrib["href"] for a in lxml.html.fromstring(html).xpath("//a")}
    assert anchors["Manage your regions"] == values["preferences_url"]
    assert anchors["Unsubscribe"] == values["unsubscribe_url"]
    view = f"http://127.0.0.1:8000/archive/{BULLETIN}-{slug(content.title)}?regions=africa,global"
    assert anchors["View online"] == view
    for name in ("preferences_url", "unsubscribe_url"):
        assert values[name] in text.splitlines()
    assert view in text.splitlines()


def test_with_the_archive_off_view_online_is_the_personal_copy(basic_settings, content, values):
    private = basic_settings.model_copy(update={"ARCHIVE_ENABLED": False})
    html, text = personalize(
        Renderer(private).variant(content, ["africa"]),
        Links(private).values(
            Recipient("ruth@example.org", "Ruth", SUBSCRIBER, delivery_id=1, bulletin_id=BULLETIN)
        ),
    )
    anchors = {a.text_content(): a.attrib["href"] for a in lxml.html.fromstring(html).xpath("//a")}
    keys = basic_settings.secret_keys
    for part in (anchors["View online"], text):
        view = re.findall(rf"http://127\.0\.0\.1:8000/view/{BULLETIN}/([A-Za-z0-9_-]+)", part)
        assert view and read_token(keys, view[0], Purpose.VIEW, max_age=timedelta(days=1)) == SUBSCRIBER
    assert "/archive/" not in html and "/archive/" not in text


def test_the_text_part_is_wrapped_at_72_columns(renderer, content, values):
    _, text = personalize(renderer.variant(content, CODES), values)
    for line in text.splitlines():
        assert len(line) <= WIDTH or line.startswith("http"), line


def unsafe_content(settings: Settings) -> BulletinContent:
    body = "Alert <script>alert('x')</script> then {{ name }} and {% if x %} Fish & chips at https://example.org/a?b=1&c=2"
    return BulletinContent(
        title="Title <i>with</i> & tags",
        subject="Subject",
        scripture_text="Verse {{ 7 * 7 }}",
        scripture_reference="Ref & co",
        sections=(Section("africa", "Africa", (ItemContent(ItemKind.PRAY, body),)),),
    )


def test_markup_and_template_syntax_in_content_show_as_text(basic_settings, values):
    variant = Renderer(basic_settings).variant(unsafe_content(basic_settings), ["africa"])
    html, text = personalize(variant, values)
    doc = lxml.html.fromstring(html)
    assert not doc.xpath("//script | //i")
    seen = visible_text(html)
    expected = "Alert <script>alert('x')</script> then {{ name }} and {% if x %} Fish & chips at https://example.org/a?b=1&c=2"
    assert expected in seen and expected in words(text)
    assert "Title <i>with</i> & tags" in seen and "Verse {{ 7 * 7 }}" in seen and "Ref & co" in seen
    # a bare URL becomes a link, and only it
    assert [a.get("href") for a in doc.xpath("//div[@class='body']//a")] == ["https://example.org/a?b=1&c=2"]
    assert "https://example.org/a?b=1&c=2" in text.split()


def test_content_cannot_spell_a_placeholder(basic_settings, values, content):
    renderer = Renderer(basic_settings)
    variant = renderer.variant(content, ["africa"])
    trick = " ".join([*variant.html_placeholders.values(), *variant.text_placeholders.values()])
    sneaky = replace(content, sections=(Section("africa", "Africa", (ItemContent(ItemKind.PRAY, trick),)),))
    html, text = personalize(renderer.variant(sneaky, ["africa"]), values)
    assert values["unsubscribe_url"] not in visible_text(html).replace("Unsubscribe", "")
    body_text = text.split("\n--\n")[0]
    assert values["unsubscribe_url"] not in body_text and values["email"] not in body_text


def test_a_subject_cannot_spell_a_placeholder_either(basic_settings, content):
    """SendGrid substitutes in the subject as in the body: a subject written as a placeholder would put
    each reader's address or unsubscribe link in it."""
    renderer = Renderer(basic_settings)
    variant = renderer.variant(content, ["africa"])
    trick = " ".join([*variant.html_placeholders.values(), *variant.text_placeholders.values()])
    subject = renderer.subject(replace(content, subject=f"Notes {trick}"))
    assert not any(
        p in subject for p in [*variant.html_placeholders.values(), *variant.text_placeholders.values()]
    )
    assert subject.replace("\u2060", "") == f"Notes {trick}", "what it says is unchanged"


def test_placeholders_differ_between_parts_and_survive_inlining(renderer, content):
    variant = renderer.variant(content, CODES)
    assert set(variant.html_placeholders) == set(PERSONAL_FIELDS) == set(variant.text_placeholders)
    assert not set(variant.html_placeholders.values()) & set(variant.text_placeholders.values())
    # "view online" is written in (the variant's archive page), not a per-recipient value
    for field in set(PERSONAL_FIELDS) - {"view_url"}:
        assert variant.html_placeholders[field] in variant.html
        assert variant.text_placeholders[field] in variant.text
        assert variant.html_placeholders[field] not in variant.text
        assert variant.text_placeholders[field] not in variant.html


def test_personalize_escapes_html_values_and_keeps_text_values_raw(renderer, content, values):
    html, text = personalize(renderer.variant(content, ["africa"]), values)
    assert "Dear Ruth &amp; Boaz," in html
    assert "Dear Ruth & Boaz," in text
    assert "~nl" not in html and "~nl" not in text


def test_substitutions_fill_both_parts_like_personalize(renderer, content, values):
    variant = renderer.variant(content, ["africa", "south-asia"])
    subs = substitutions(variant, values)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in subs.items())
    html, text = variant.html, variant.text
    for placeholder, value in subs.items():
        html, text = html.replace(placeholder, value), text.replace(placeholder, value)
    assert (html, text) == personalize(variant, values)


def test_a_test_send_without_subscriber_gets_harmless_example_links(basic_settings, renderer, content):
    values = Links(basic_settings).values(Recipient("staff@example.org", "Staff", None, bulletin_id=BULLETIN))
    assert set(PERSONAL_FIELDS) <= set(values)
    html, _ = personalize(renderer.variant(content, ["africa"], test=True), values)
    assert values["unsubscribe_url"].endswith("/unsubscribe/example")
    assert values["unsubscribe_url"] in html


def test_three_times_the_sample_stays_under_gmails_clipping_limit(basic_settings, content, values):
    tripled = replace(
        content,
        sections=tuple(replace(s, items=s.items * 3) for s in content.sections),
        intro="A word before we pray together this week. " * 3,
    )
    renderer = Renderer(basic_settings)
    sizes = {mix: len(personalize(renderer.variant(tripled, mix), values)[0].encode()) for mix in MIXES}
    largest = max(sizes.values())
    assert largest == sizes[tuple(CODES)]
    sample_size = len(Path(__file__).parents[1].joinpath("data").joinpath("prayer-bulletin.txt").read_bytes())
    assert largest > 3 * sample_size  # the measure is real
    assert largest < GMAIL_CLIP_BYTES, f"{largest} bytes"


def test_confirmation_email_asks_to_confirm_with_a_link_that_verifies(basic_settings):
    variant = Renderer(basic_settings).confirmation("naomi@example.org", "Naomi\r\nBcc: x@example.org")
    assert variant.key == "confirmation" and variant.regions == ()
    assert "confirm" in variant.subject.lower()
    values = Links(basic_settings).values(Recipient("naomi@example.org", "Naomi", 77))
    html, text = personalize(variant, values)
    for part in (visible_text(html), words(text)):
        assert "naomi@example.org" in part and "Dear Naomi Bcc: x@example.org," in part
        assert basic_settings.ORG_POSTAL_ADDRESS in part
    token = values["confirm_url"].rsplit("/", 1)[1]
    assert urlsplit(values["confirm_url"]).path == f"/confirm/{token}"
    assert read_token(basic_settings.secret_keys, token, Purpose.CONFIRM, max_age=timedelta(days=7)) == 77
    # the button, and the address written out (as link and as text) for clients that hide buttons
    assert html.count(values["confirm_url"]) == 3 and values["confirm_url"] in text.splitlines()


def test_templates_dir_setting_replaces_the_shipped_templates(basic_settings, content, tmp_path):
    shipped = basic_settings.templates_dir
    custom = tmp_path / "templates"
    shutil.copytree(shipped, custom)
    txt = custom / "email" / "bulletin.txt"
    txt.write_text("Custom edition\n" + txt.read_text(encoding="utf-8"), encoding="utf-8")
    settings = get_settings(TEMPLATES_DIR=custom)
    assert Renderer(settings).variant(content, ["africa"]).text.startswith("Custom edition")


TRICKY = BulletinContent(
    title="Tom & Jerry's <news>",
    subject="A & B",
    scripture_text="“Fear not” — Isaiah’s words & more",
    scripture_reference="Isaiah 41:10",
    sections=tuple(
        Section(
            code,
            f"{code.title()} & <Friends> «{n}»",
            (
                ItemContent(
                    ItemKind.PRAY, f"Pray for *{code}* & <b>the</b> \u00a0team — “{n}” ~nl 'x' \"y\""
                ),
                ItemContent(ItemKind.PRAISE, "Praise: [a link](https://example.org/?a=1&b=2)"),
            ),
        )
        for n, code in enumerate(CODES)
    ),
    intro="Intro with **bold** & <tags>",
    id=BULLETIN,
)


@pytest.mark.parametrize("test_send", [False, True])
@pytest.mark.parametrize("which", ["sample", "tricky"])
def test_cutting_variants_from_one_inlined_bulletin_gives_the_bytes_of_inlining_each(
    basic_settings, content, which, test_send
):
    """Variants are cut from the whole bulletin inlined once; each must be exactly what premailer makes
    of that variant's own HTML."""
    bulletin = content if which == "sample" else TRICKY
    renderer = Renderer(basic_settings)
    for mix in MIXES:
        fast = renderer.variant(bulletin, mix, test=test_send).html
        source, _, _ = renderer.sources(
            bulletin, tuple(c for c in bulletin.region_codes if c in mix), test_send
        )
        assert fast == inline_css_marked(source), mix
        assert "~nl-section" not in fast and "~nlv~" not in fast


def test_a_template_without_section_marks_is_inlined_variant_by_variant(basic_settings, content, tmp_path):
    shutil.copytree(basic_settings.templates_dir, tmp_path / "templates")
    page = tmp_path / "templates" / "email" / "bulletin.html"
    page.write_text(page.read_text().replace("{{ section_mark }}", "").replace("{{ sections_end }}", ""))
    renderer = Renderer(get_settings(TEMPLATES_DIR=tmp_path / "templates"))
    for mix in [("africa",), ("africa", "global"), tuple(CODES)]:
        source, _, _ = renderer.sources(content, mix)
        assert renderer.variant(content, mix).html == inline_css_marked(source)
