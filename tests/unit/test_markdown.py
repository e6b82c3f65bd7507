"""Item Markdown: safe HTML for the HTML part, plain text wrapped at 72 columns for the text part."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from newsletter.content.markdown import WIDTH, excerpt, plain, to_html, to_text

URL = "https://example.org/justice/a-very-long-path-with-many-hyphens/and-query?one=1&two=2&three=3"


def test_raw_html_and_template_syntax_show_as_text():
    html = to_html("Watch <script>alert(1)</script> and {{ name }} & {% raw %} <b>bold</b>")
    assert "<script>" not in html and "<b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "{{ name }}" in html and "{% raw %}" in html
    assert "&amp;" in html


def test_markdown_emphasis_lists_and_links_become_html():
    html = to_html("**Praise** God for *this*:\n\n- one\n- two\n\n[Read more](https://example.org/story)")
    assert "<strong>Praise</strong>" in html and "<em>this</em>" in html
    assert "<ul>" in html and "<li>one</li>" in html
    assert '<a href="https://example.org/story">Read more</a>' in html


def test_dangerous_link_schemes_stay_text():
    html = to_html("[click](javascript:alert(1)) [data](data:text/html;base64,xxx)")
    assert "href" not in html


def test_a_bare_url_becomes_a_link_with_its_ampersands_escaped():
    html = to_html(f"See {URL} today")
    escaped = URL.replace("&", "&amp;")
    assert html == f'<p>See <a href="{escaped}">{escaped}</a> today</p>\n'


def test_only_urls_with_a_scheme_link_not_bare_domains_or_emails():
    html = to_html("Visit www.ijm.org, IJM.org or write to info@ijm.org, or http://ijm.org.")
    assert html.count("<a ") == 1
    assert '<a href="http://ijm.org">http://ijm.org</a>' in html


def test_linkify_never_makes_a_dangerous_link():
    for source in ("javascript:alert(1)", "data:text/html;base64,PHNjcmlwdD4=", "vbscript:msgbox(1)"):
        assert "<a" not in to_html(f"see {source} now")
    html = to_html('https://example.org/"onmouseover="alert(1)')
    assert 'onmouseover="' not in html  # the quote is escaped inside the attribute


def test_a_linkified_url_appears_once_in_the_text_part():
    assert to_text(f"See {URL} and www.ijm.org today") == f"See\n{URL}\nand www.ijm.org today"


def test_indented_text_and_dash_lines_are_not_code_or_headings():
    html = to_html("    indented by a paste\n\nTitle\n===")
    assert "<pre>" not in html and "<h1>" not in html


def test_text_wraps_at_72_columns_without_breaking_a_url():
    body = (
        ("Pray for the team in Kampala as they prepare the hearing. " * 4) + URL + " and more words follow."
    )
    text = to_text(body)
    lines = text.splitlines()
    assert URL in lines
    assert all(len(line) <= WIDTH for line in lines if line != URL)


def test_text_keeps_a_hanging_prefix_for_labels():
    text = to_text("word " * 40, first_prefix="[PRAY]   ", indent=" " * 9)
    first, *rest = text.splitlines()
    assert first.startswith("[PRAY]   word")
    assert rest and all(line.startswith(" " * 9 + "word") for line in rest)
    assert all(len(line) <= WIDTH for line in text.splitlines())


def test_text_shows_raw_characters_and_link_targets():
    text = to_text("Fish & chips <script>x</script> {{ y }} [story](https://example.org/s) **bold**")
    assert (
        " ".join(text.split()) == "Fish & chips <script>x</script> {{ y }} story (https://example.org/s) bold"
    )


def test_text_renders_lists_and_quotes():
    text = to_text("Intro\n\n- one\n- two\n\n1. first\n2. second\n\n> quoted")
    assert text == "Intro\n\n- one\n- two\n\n1. first\n2. second\n\n> quoted"


def test_excerpt_cuts_at_a_word():
    assert excerpt("Pray for **all** of the preparations", 22) == "Pray for all of the…"
    assert excerpt("Short.") == "Short."
    assert plain("A *b*\nc") == "A b c"


words = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=15
)


@given(st.lists(st.one_of(words, st.just(URL)), max_size=60))
def test_every_word_survives_wrapping_and_no_line_is_longer_than_it_must_be(tokens):
    source = " ".join(t for t in tokens if t.strip())
    text = to_text(source)
    for line in text.splitlines():
        # a line may pass 72 columns only when it holds one unbreakable word
        # (after quote markers and list bullets or numbers, which are not words)
        words_of_line = re.sub(r"^(\s*(>|[-*+•]|\d+[.)])(?=\s))+", "", line).strip()
        assert len(line) <= WIDTH or not re.search(r"\S\s+\S", words_of_line)
