"""Render a bulletin once per region set, with placeholders where each recipient's values go.

`Renderer.variant(content, regions)` runs Jinja2 (autoescaped HTML, plain text) on `templates/email/`
and premailer on the HTML, then keeps the result: a send of 100,000 subscribers over five regions
renders at most 31 times. Premailer runs once per bulletin, not once per variant: the whole bulletin
is inlined and each variant cut from it at the section marks of the template (`_InlinedUnion`). Per-recipient values (PERSONAL_FIELDS) are placeholders:

    HTML part   ~nlh~<field>~     filled with HTML-escaped values
    text part   ~nlt~<field>~     filled with raw values

They are made of characters that neither Jinja's autoescape, premailer, lxml's serializer nor a URL
encoder touch, differ between the parts (SendGrid substitutes both parts from one map), and cannot
come from content: any `~nl` in content is broken up with an invisible WORD JOINER (U+2060) before
it reaches the output. The ESP fills them (`substitutions`) or `personalize` does, one recipient at a
time.

The confirmation email of the double opt-in is rendered per address (`Renderer.confirmation`): name
and address are written in, and its one placeholder is `confirm_url` (`~nlh~confirm_url~` /
`~nlt~confirm_url~`), which `Links.values` provides next to PERSONAL_FIELDS. `personalize` and
`substitutions` fill whatever placeholders a variant declares, so both kinds go through the same
backends.
"""

from __future__ import annotations

import html as html_lib
import logging
import re
import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any

import jinja2
from markupsafe import Markup
from premailer import Premailer

from newsletter.content import archive, markdown
from newsletter.content.types import (
    PERSONAL_FIELDS,
    BulletinContent,
    RenderedVariant,
    variant_key,
)
from newsletter.core.config import Settings, render_subject
from newsletter.core.status import ItemKind

_MARK = "~nl"
_DEFUSED = "~\u2060nl"
CONFIRMATION_KEY = "confirmation"
"""`RenderedVariant.key` of a confirmation email (its `regions` is empty)."""

TEST_PREFIX = "[TEST] "
PREHEADER_CHARS = 110
# Invisible filler after the preheader, so that clients do not pull body text into the inbox preview.
_PREHEADER_PAD = "\u034f\u00a0" * 60

KIND_LABELS = {ItemKind.PRAY: "Pray", ItemKind.PRAISE: "Praise", ItemKind.PLAIN: ""}
"""The label above an item in HTML; a plain item has none."""
TEXT_INDENT = " " * 9
TEXT_LABELS = {ItemKind.PRAY: "[PRAY]   ", ItemKind.PRAISE: "[PRAISE] ", ItemKind.PLAIN: TEXT_INDENT}


_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def display_name(name: str) -> str:
    """A name as a page or email body shows it: every control character (CR, LF…) becomes one space.

    Never raises: rendering shows whatever is stored. Refusing bad names at input is
    `audience.subscribers.validate_name`; keeping names out of headers is `mail.links.header_safe_name`.
    """
    return " ".join(_CONTROL_CHARS.sub(" ", name).split())


class _Placeholder(str):
    """A placeholder in a template: passes Jinja's output step untouched (content is defused)."""

    __slots__ = ()


class _Mark(Markup):
    """An HTML comment the bulletin template writes around its sections (content is defused)."""

    __slots__ = ()


def html_placeholder(field: str) -> str:
    return f"{_MARK}h~{field}~"


def text_placeholder(field: str) -> str:
    return f"{_MARK}t~{field}~"


def _placeholders(fields: Iterable[str]) -> tuple[dict[str, str], dict[str, str]]:
    fields = tuple(fields)
    return (
        {f: _Placeholder(html_placeholder(f)) for f in fields},
        {f: _Placeholder(text_placeholder(f)) for f in fields},
    )


def _finalize(value: Any) -> Any:
    """Jinja's last step for every `{{ }}`: content can never spell a placeholder."""
    if isinstance(value, _Placeholder | _Mark) or not isinstance(value, str) or _MARK not in value:
        return value
    defused = value.replace(_MARK, _DEFUSED)
    return Markup(defused) if isinstance(value, Markup) else defused


def make_environment(templates_dir: Any) -> jinja2.Environment:
    """Jinja2 for `templates/`: autoescape for `.html`, undefined names are errors, Markdown filters."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir)),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        finalize=_finalize,
    )
    env.filters["markdown"] = lambda source: Markup(markdown.to_html(source))
    env.filters["markdown_text"] = markdown.to_text
    env.filters["wrap"] = markdown.wrap
    env.filters["nl2br"] = lambda text: Markup("<br>").join(str(text).splitlines())
    return env


def inline_css(html: str) -> str:
    """Move the <style> rules onto the elements; `@media` and `:root` rules stay in a <style> block.

    `strip_important=False`: premailer's default would strip `!important` from the media queries
    too, and the phone layout needs it to beat the inlined styles. No network, ever.
    """
    inlined: str = Premailer(
        html,
        base_url=None,
        keep_style_tags=False,
        strip_important=False,
        remove_classes=False,
        disable_validation=True,
        allow_network=False,
        allow_loading_external_files=False,
        cssutils_logging_level=logging.CRITICAL,
    ).transform(pretty_print=False)
    return inlined if inlined.endswith("\n") else inlined + "\n"


class Renderer:
    """Renders and caches the variants of bulletins for one installation's settings and templates."""

    def __init__(self, settings: Settings, *, cache_size: int = 256) -> None:
        self.settings = settings
        self.env = make_environment(settings.templates_dir)
        self._cache: dict[tuple[Any, ...], RenderedVariant] = {}
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._html_placeholders, self._text_placeholders = _placeholders(PERSONAL_FIELDS)
        self._unions: dict[tuple[Any, ...], _InlinedUnion] = {}

    def variant(
        self, content: BulletinContent, regions: Iterable[str], *, test: bool = False
    ) -> RenderedVariant:
        """What a subscriber of `regions` receives of `content`: its sections, in display order.

        Regions the bulletin has no section for are ignored; a set that selects no section at all
        raises ValueError (such a subscriber gets no email). `regions` may also be a variant key
        (`"africa,global"`). `test=True` is the staff test send: "[TEST] " subject and a banner.
        Cached: the second call for the same content and selection costs a dictionary lookup.
        """
        if isinstance(regions, str):
            regions = regions.split(",")
        wanted = regions if isinstance(regions, frozenset) else frozenset(regions)
        selected = tuple(code for code in content.region_codes if code in wanted)
        # footer_note is left out of BulletinContent's equality, so it joins the key explicitly.
        cache_key = (content, content.footer_note, selected, test)
        cached = self._cache.get(cache_key)
        if cached is not None:
            return cached
        if not selected:
            raise ValueError(
                f"no section of bulletin {content.id or content.title!r} is for regions {sorted(wanted)}"
            )
        rendered = self._render(content, selected, test)
        with self._lock:
            if len(self._cache) >= self._cache_size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[cache_key] = rendered
        return rendered

    def sources(
        self, content: BulletinContent, selected: tuple[str, ...], test: bool = False
    ) -> tuple[str, str, str]:
        """(HTML before inlining, text, preheader) of a selection: the Jinja half of a render.

        Separate so that `bench/render_bench.py` can time CSS inliners on the same input.
        """
        context = self._context(content, selected, test)
        html = self.env.get_template("email/bulletin.html").render(context, p=self._html_placeholders)
        text = self.env.get_template("email/bulletin.txt").render(context, p=self._text_placeholders)
        return html, _tidy_text(text), str(context["preheader"])

    def _context(self, content: BulletinContent, selected: tuple[str, ...], test: bool) -> dict[str, Any]:
        sections = content.only(frozenset(selected))
        first = sections[0].items[0].body if sections and sections[0].items else content.intro
        subject = self.subject(content)
        return {
            **self._brand_context(),
            "dateline": self._dateline(content),
            "lang": "en",
            "title": content.title,
            "subject": (TEST_PREFIX + subject) if test else subject,
            "content": content,
            "sections": sections,
            "test": test,
            "org_name": self.settings.ORG_NAME,
            "postal_address": self.settings.ORG_POSTAL_ADDRESS.strip(),
            "regions_label": _and_join([s.region_name for s in sections]),
            "kind_labels": KIND_LABELS,
            "text_labels": TEXT_LABELS,
            "text_indent": TEXT_INDENT,
            "preheader": markdown.excerpt(first, PREHEADER_CHARS),
            "preheader_pad": _PREHEADER_PAD,
            "section_mark": _SECTION_MARK,
            "sections_end": _SECTIONS_END,
            "archive_url": self.archive_url(content, selected),
        }

    def _brand_context(self) -> dict[str, Any]:
        """The branding settings every email template sees (`brand.*`)."""
        s = self.settings
        return {
            "brand": {
                "logo_url": s.LOGO_URL,
                "logo_alt": s.LOGO_ALT,
                "accent": s.ACCENT_COLOUR,
                "donate_url": s.DONATE_URL,
                "donate_label": s.DONATE_LABEL,
            }
        }

    def issue_date(self, content: BulletinContent) -> date:
        """The day the bulletin is (or was) sent, in `TIMEZONE`; today for one not planned yet."""
        when = content.send_time or datetime.now(UTC)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when.astimezone(self.settings.tz).date()

    def _dateline(self, content: BulletinContent) -> str:
        """The line under the title: the date ("7 December 2026"), the issue number, or nothing."""
        if self.settings.DATELINE == "issue":
            return f"Issue no. {content.id}" if content.id else ""
        if self.settings.DATELINE == "date":
            day = self.issue_date(content)
            return f"{day.day} {day:%B %Y}"
        return ""

    def subject(self, content: BulletinContent) -> str:
        """The subject line: `SUBJECT_TEMPLATE` filled in, or the bulletin's subject as written."""
        title = content.subject or content.title
        subject = render_subject(
            self.settings.SUBJECT_TEMPLATE, title, self.issue_date(content), content.id or 0
        )
        # SendGrid substitutes in the subject too: content must not spell a placeholder there either.
        return subject.replace(_MARK, _DEFUSED)

    def archive_url(self, content: BulletinContent, selected: tuple[str, ...]) -> str:
        """The public archive page of exactly what this variant holds: the email's "view online" link,
        the same for every recipient of the variant and safe to forward. "" when the archive is off
        (`ARCHIVE_ENABLED`) or the content is not stored yet: then the link is the personal one."""
        if not self.settings.ARCHIVE_ENABLED or content.id is None:
            return ""
        regions = selected if selected != content.region_codes else ()
        return self.settings.BASE_URL.rstrip("/") + archive.path(content.id, content.title, regions)

    def _render(self, content: BulletinContent, selected: tuple[str, ...], test: bool) -> RenderedVariant:
        context = self._context(content, selected, test)
        text = self.env.get_template("email/bulletin.txt").render(context, p=self._text_placeholders)
        html = self._union(content, test).variant(context)
        if html is None:
            source = self.env.get_template("email/bulletin.html").render(context, p=self._html_placeholders)
            html = inline_css_marked(source)
        subject = self.subject(content)
        return RenderedVariant(
            key=variant_key(selected),
            regions=selected,
            subject=(TEST_PREFIX + subject) if test else subject,
            html=html,
            text=_tidy_text(text),
            html_placeholders=dict(self._html_placeholders),
            text_placeholders=dict(self._text_placeholders),
            bulletin_id=content.id,
            preheader=str(context["preheader"]),
        )

    def _union(self, content: BulletinContent, test: bool) -> _InlinedUnion:
        """The bulletin with every section, inlined once; each variant is cut from it (`_InlinedUnion`)."""
        key = (content, content.footer_note, test)
        with self._lock:
            union = self._unions.get(key)
        if union is None:
            context = self._context(content, content.region_codes, test)
            context.update(regions_label=_LABEL_MARK, preheader=_PREHEADER_MARK)
            if context["archive_url"]:
                context["archive_url"] = _ARCHIVE_MARK
            source = self.env.get_template("email/bulletin.html").render(context, p=self._html_placeholders)
            union = _InlinedUnion.cut(inline_css(source), len(content.sections))
            with self._lock:
                if len(self._unions) >= 8:
                    self._unions.pop(next(iter(self._unions)))
                self._unions[key] = union
        return union

    def confirmation(self, email: str, name: str) -> RenderedVariant:
        """The double opt-in email for `email`: one placeholder, `confirm_url` (see module docstring)."""
        html_ph, text_ph = _placeholders(["confirm_url"])
        name = display_name(name)
        org = self.settings.ORG_NAME
        context = {
            **self._brand_context(),
            "lang": "en",
            "title": f"Confirm your subscription to {org}",
            "subject": f"Please confirm your subscription to {org}",
            "test": False,
            "org_name": org,
            "postal_address": self.settings.ORG_POSTAL_ADDRESS.strip(),
            "name": name,
            "email": email,
            "confirm_days": max(1, round(self.settings.CONFIRM_TTL / 86400)),
            "preheader": f"One click to start receiving the {org} prayer bulletin.",
            "preheader_pad": _PREHEADER_PAD,
        }
        html = self.env.get_template("email/confirmation.html").render(context, p=html_ph)
        text = self.env.get_template("email/confirmation.txt").render(context, p=text_ph)
        return RenderedVariant(
            key=CONFIRMATION_KEY,
            regions=(),
            subject=f"Please confirm your subscription to {org}",
            html=inline_css_marked(html),
            text=_tidy_text(text),
            html_placeholders=dict(html_ph),
            text_placeholders=dict(text_ph),
            preheader=str(context["preheader"]),
        )


_SECTION_MARK = _Mark(f"<!--{_MARK}-section~-->")
_SECTIONS_END = _Mark(f"<!--{_MARK}-sections-end~-->")
_LABEL_MARK = _Placeholder(f"{_MARK}v~regions_label~")
_PREHEADER_MARK = _Placeholder(f"{_MARK}v~preheader~")
_ARCHIVE_MARK = _Placeholder(f"{_MARK}v~archive_url~")
# A URL lxml writes into an href exactly as given: nothing it would entity- or percent-escape.
_PLAIN_URL = re.compile(r"[A-Za-z0-9._~:/?#@!'()*+,;=%-]*")


def inline_css_marked(html: str) -> str:
    """`inline_css`, and the section marks of the bulletin template taken out."""
    return inline_css(html).replace(_SECTION_MARK, "").replace(_SECTIONS_END, "")


class _InlinedUnion:
    """A bulletin with all its sections, inlined once, cut at the template's section marks.

    Premailer is most of a render's time, and a bulletin has up to 31 variants that differ only in
    which sections they hold, the regions named in the footer, the preheader and the archive link. Inlining styles each
    element by the rules that match it, and the stylesheet has no rule that looks at siblings, so an
    inlined section does not depend on which others are present: a variant is the inlined head, its
    sections and the tail, with the label and preheader written in as the HTML serializer writes text.
    `tests/unit/test_render.py` checks this byte for byte against inlining each variant on its own.
    """

    def __init__(self, head: str, sections: list[str], tail: str) -> None:
        self.head, self.sections, self.tail = head, sections, tail

    @classmethod
    def cut(cls, inlined: str, count: int) -> _InlinedUnion:
        head, *rest = inlined.split(_SECTION_MARK)
        if len(rest) != count or rest[-1].count(_SECTIONS_END) != 1:
            return cls("", [], "")  # a template without the marks: every variant is inlined on its own
        last, tail = rest[-1].split(_SECTIONS_END)
        return cls(head, [*rest[:-1], last], tail)

    def variant(self, context: Mapping[str, Any]) -> str | None:
        """The inlined HTML of the variant `context` renders, or None when this union cannot give it."""
        if not self.sections:
            return None
        content: BulletinContent = context["content"]
        chosen = {s.region_code for s in context["sections"]}
        body = "".join(
            part
            for section, part in zip(content.sections, self.sections, strict=True)
            if section.region_code in chosen
        )
        html = self.head + body + self.tail
        for mark, value in ((_LABEL_MARK, context["regions_label"]), (_PREHEADER_MARK, context["preheader"])):
            html = html.replace(mark, _html_text(str(_finalize(value))))
        if _ARCHIVE_MARK in html:
            url = str(context["archive_url"])
            if not _PLAIN_URL.fullmatch(url):
                return None  # the serializer would escape it: let premailer write this variant itself
            html = html.replace(_ARCHIVE_MARK, url)
        return html


def _html_text(value: str) -> str:
    """`value` as text content, escaped as lxml's HTML serializer (premailer's output) escapes it."""
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_BODY_OPEN = re.compile(r"<body\b[^>]*>", re.IGNORECASE)


def as_web_page(html: str) -> str:
    """A rendered email as a page of our site (view online): its body inside a `<main>` landmark.

    The email itself is an `article` labelled with its subject (what mail clients expect); a web page
    needs a main landmark as well, so that "skip to main" and landmark navigation work.
    """
    opened = _BODY_OPEN.search(html)
    closing = html.rfind("</body>")
    if opened is None or closing < opened.end():
        return html
    return html[: opened.end()] + "<main>" + html[opened.end() : closing] + "</main>" + html[closing:]


def personalize(variant: RenderedVariant, values: Mapping[str, str]) -> tuple[str, str]:
    """(html, text) of `variant` for one recipient: HTML-escaped values in the HTML, raw in the text.

    `values` must hold every field the variant has a placeholder for (`Links.values` does). Runs once
    per recipient for one-at-a-time backends, so each part is split at its placeholders once per
    variant and then only joined.
    """
    html_parts, html_slots, text_parts, text_slots = _split(variant)
    html = list(html_parts)
    for index, field in html_slots:
        html[index] = html_lib.escape(values[field])
    text = list(text_parts)
    for index, field in text_slots:
        text[index] = values[field]
    return "".join(html), "".join(text)


_Slots = tuple[tuple[int, str], ...]


@lru_cache(maxsize=64)
def _split(variant: RenderedVariant) -> tuple[tuple[str, ...], _Slots, tuple[str, ...], _Slots]:
    """Each part as literal pieces with (index, field) slots where the placeholders were."""
    html = _split_part(variant.html, variant.html_placeholders)
    text = _split_part(variant.text, variant.text_placeholders)
    return html[0], html[1], text[0], text[1]


def _split_part(part: str, placeholders: Mapping[str, str]) -> tuple[tuple[str, ...], _Slots]:
    if not placeholders:
        return (part,), ()
    field_of = {ph: field for field, ph in placeholders.items()}
    pieces = re.split("(" + "|".join(map(re.escape, field_of)) + ")", part)
    return tuple(pieces), tuple((i, field_of[pieces[i]]) for i in range(1, len(pieces), 2))


def substitutions(variant: RenderedVariant, values: Mapping[str, str]) -> dict[str, str]:
    """SendGrid's `substitutions` for one personalization: every placeholder of both parts → its value.

    All values are str: SendGrid answers a non-string substitution with an unhelpful 400.
    """
    subs = {ph: html_lib.escape(str(values[field])) for field, ph in variant.html_placeholders.items()}
    subs.update({ph: str(values[field]) for field, ph in variant.text_placeholders.items()})
    return subs


def _and_join(names: list[str]) -> str:
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def _tidy_text(text: str) -> str:
    """No trailing spaces, at most one blank line in a row... except the two before a region heading."""
    lines = [line.rstrip() for line in text.strip("\n").split("\n")]
    out: list[str] = []
    blanks = 0
    for line in lines:
        blanks = blanks + 1 if not line else 0
        if blanks <= 2:
            out.append(line)
    return "\n".join(out) + "\n"
