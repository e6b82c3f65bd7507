"""Field errors: `FormErrors` and the macros of templates/web/_fields.html, rendered without a server.

The summary's links must land on the fields, and each bad field must be marked and described by its
message, whatever the field is called."""

from __future__ import annotations

import re
from html import unescape
from pathlib import Path

import jinja2
from hypothesis import given
from hypothesis import strategies as st

from newsletter.web.form_errors import FormErrors

TEMPLATES = Path(__file__).resolve().parents[2] / "templates" / "web"
ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True, undefined=jinja2.StrictUndefined
)
FIELDS = ENV.get_template("_fields.html").module  # type: ignore[attr-defined]


def ids_described_by(html: str, element_id: str) -> list[str]:
    tag = re.search(rf'<(?:input|textarea|select|fieldset)\b[^>]*\bid="{re.escape(element_id)}"[^>]*>', html)
    assert tag, html
    described = re.search(r'aria-describedby="([^"]*)"', tag.group(0))
    return described.group(1).split() if described else []


def test_a_clean_form_has_no_error_markup():
    errors = FormErrors(prefix="nl-")
    html = str(FIELDS.field(errors, "email", "Email address", "ruth@example.org", type="email"))
    assert not errors and len(errors) == 0
    assert "aria-invalid" not in html and "field-error" not in html
    assert 'value="ruth@example.org"' in html and '<label for="nl-email">' in html
    assert str(FIELDS.error_summary(errors)).strip() == ""


def test_a_bad_field_is_marked_described_and_linked_from_the_summary():
    errors = FormErrors({"email": "Enter an email address, like name@example.org."}, prefix="nl-")
    html = str(
        FIELDS.field(errors, "email", "Email address", "ruth@", type="email", hint="We never share it.")
    )
    tag = re.search(r"<input[^>]*>", html)
    assert tag and 'aria-invalid="true"' in tag.group(0)
    assert ids_described_by(html, "nl-email") == ["nl-email-hint", "nl-email-error"]
    assert re.search(r'id="nl-email-error"[^>]*>.*Enter an email address', html, re.S)
    assert 'value="ruth@"' in html  # what was typed stays
    summary = str(FIELDS.error_summary(errors))
    assert 'tabindex="-1"' in summary and "autofocus" in summary
    assert '<a href="#nl-email">Enter an email address, like name@example.org.</a>' in summary


def test_a_group_of_checkboxes_links_to_its_first_box():
    errors = FormErrors({"regions": "Choose at least one region."})
    html = str(
        FIELDS.checkboxes(errors, "regions", "Regions", [("africa", "Africa"), ("global", "Global")], [])
    )
    assert ids_described_by(html, "regions") == []  # the box itself: the group carries the description
    assert re.search(r'<fieldset[^>]*aria-describedby="regions-error"', html)
    assert html.count('aria-invalid="true"') == 2
    assert 'id="regions"' in html and 'id="regions-global"' in html


def test_passwords_are_never_written_back():
    errors = FormErrors({"password": "Type your password again."})
    html = str(FIELDS.field(errors, "password", "Password", "secret-typed", type="password"))
    assert "secret-typed" not in html and 'aria-invalid="true"' in html


def test_the_page_title_says_error_only_when_a_form_was_refused():
    base = ENV.get_template("base.html")
    assert "<title>Error: " in base.render(form_errors=FormErrors({"x": "Bad."}), org_name="Org")
    assert "<title>Error: " not in base.render(form_errors=FormErrors(), org_name="Org")
    assert "<title>Error: " not in base.render(org_name="Org")


_names = st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True).filter(lambda n: n != "error_summary")
_messages = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=60)


@given(st.dictionaries(_names, _messages, min_size=1, max_size=5), st.sampled_from(["", "nl-", "edit-"]))
def test_every_summary_link_lands_on_a_marked_field_that_carries_its_message(messages, prefix):
    errors = FormErrors(messages, prefix=prefix)
    page = str(FIELDS.error_summary(errors)) + "".join(
        str(FIELDS.field(errors, name, name.title(), "typed")) for name in messages
    )
    targets = re.findall(r'<a href="#([^"]+)">', page)
    assert targets == [errors.field_id(name) for name in messages]
    for name, target in zip(messages, targets, strict=True):
        assert page.count(f'id="{target}"') == 1
        described = ids_described_by(page, target)
        assert described == [errors.error_id(name)]
        shown = re.search(rf'id="{described[0]}"[^>]*>(.*?)</p>', page, re.S)
        assert shown and unescape(shown.group(1)).strip().endswith(messages[name].strip())
