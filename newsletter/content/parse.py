"""Reading a bulletin from text: the plain format of `subscribers/sample-bulletin.txt`, or Markdown.

Plain text::

    IJM Prayer Request                      ← title (first non-empty line)

    "When justice is done, …"               ← the verse, in quotes (may span lines)
    - Proverbs 21:15                        ← its reference, after -, – or —

    Pray for …                              ← items before any heading go to DEFAULT_REGION

    Latin America                           ← a region heading: a code, a name or an alias
    Praise God that …                       ← items: paragraphs, or lines starting with •

Markdown: `# Title`, the verse as a quoted line or `>` block, `## Region` headings, items as
paragraphs or `-`/`*`/`•` list entries. Bodies are kept exactly as written; the verse loses only its
enclosing quotation marks. Pure: text in, `BulletinContent` out, or `ImportFailed` naming the line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from newsletter.content.regions import RegionIndex
from newsletter.content.types import BulletinContent, ItemContent, Section
from newsletter.core.errors import ImportFailed, Problem
from newsletter.core.status import ItemKind

OPEN_QUOTES = "\"“„«'‘"
CLOSE_QUOTES = "\"”«»'’“"
REFERENCE_DASH = re.compile(r"^\s*[-–—]\s*(?P<ref>\S.*?)\s*$")
BULLET = re.compile(r"^\s*•\s*")
MD_BULLET = re.compile(r"^\s*(?:[-*+•])\s+")
MD_HEADING = re.compile(r"^\s*(?P<hashes>#{1,6})\s+(?P<text>.*?)\s*#*\s*$")
_SMALL_WORDS = {"and", "of", "the", "&", "for", "in", "de", "la"}
MAX_HEADING_WORDS = 6


@dataclass
class _Paragraph:
    line: int
    lines: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def _paragraphs(lines: list[str], start: int, markdown: bool) -> list[_Paragraph]:
    """Split lines (from index `start`) into paragraphs at blank lines; bullets start a new paragraph."""
    bullet = MD_BULLET if markdown else BULLET
    paragraphs: list[_Paragraph] = []
    current: _Paragraph | None = None
    for index in range(start, len(lines)):
        line = lines[index]
        if not line.strip():
            current = None
            continue
        heading = markdown and MD_HEADING.match(line)
        if current is None or bullet.match(line) or heading:
            current = _Paragraph(index + 1)
            paragraphs.append(current)
            current.lines.append(line.rstrip())
            if heading:
                current = None
            continue
        current.lines.append(line.rstrip())
    return paragraphs


def _looks_like_heading(text: str) -> bool:
    """A short single line in title case without sentence punctuation: meant as a heading."""
    if "\n" in text or text.rstrip()[-1:] in ".!?,;\"”’'":
        return False
    words = text.split()
    if not words or len(words) > MAX_HEADING_WORDS:
        return False
    return all(w[0].isupper() or not w[0].isalpha() or w.casefold() in _SMALL_WORDS for w in words)


def _strip_quotes(text: str) -> str:
    text = text.strip()
    if text[:1] in OPEN_QUOTES:
        text = text[1:]
    if text[-1:] in CLOSE_QUOTES:
        text = text[:-1]
    return text.strip()


def _kind(body: str) -> ItemKind:
    return ItemKind.PRAISE if body.lstrip("*_ ").casefold().startswith("praise") else ItemKind.PRAY


def parse_bulletin(
    text: str, regions: RegionIndex, default_region: str, *, source: str = "bulletin"
) -> BulletinContent:
    """Parse a bulletin; raise `ImportFailed` with line-numbered problems if the text cannot be read."""
    if default_region not in regions.codes:
        raise ImportFailed(source, [Problem(0, f"DEFAULT_REGION {default_region!r} is not a known region")])
    if "\x00" in text:
        raise ImportFailed(source, [Problem(0, "this is not a text file (it contains NUL bytes)")])
    lines = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    markdown = any(MD_HEADING.match(line) for line in lines)
    paragraphs = _paragraphs(lines, 0, markdown)
    problems: list[Problem] = []
    if not paragraphs:
        raise ImportFailed(source, [Problem(0, "the file is empty")])

    # Title: the first paragraph's first line (a `# Title` heading in Markdown).
    first = paragraphs.pop(0)
    title_line = first.lines[0].strip()
    heading = MD_HEADING.match(title_line)
    title = heading.group("text").strip() if heading else title_line
    if not title:
        problems.append(Problem(first.line, "the first line should be the bulletin's title"))
    leftover = first.lines[1:]
    if leftover:
        paragraphs.insert(0, _Paragraph(first.line + 1, leftover))

    # Verse and reference: a quoted paragraph (or `>` block), then a line starting with a dash.
    scripture_text = scripture_reference = ""
    if paragraphs:
        candidate = paragraphs[0]
        raw = "\n".join(line.lstrip("> ").rstrip() if markdown else line for line in candidate.lines)
        if raw.lstrip()[:1] in OPEN_QUOTES:
            paragraphs.pop(0)
            verse_lines = raw.split("\n")
            ref = REFERENCE_DASH.match(verse_lines[-1]) if len(verse_lines) > 1 else None
            if ref:
                verse_lines = verse_lines[:-1]
            elif paragraphs and REFERENCE_DASH.match(paragraphs[0].text.lstrip("> ")):
                ref = REFERENCE_DASH.match(paragraphs.pop(0).text.lstrip("> "))
            scripture_text = _strip_quotes("\n".join(verse_lines))
            if ref:
                scripture_reference = ref.group("ref")
            else:
                problems.append(
                    Problem(candidate.line, "the verse has no reference line (e.g. '- Proverbs 21:15')")
                )

    # Sections.
    items: dict[str, list[ItemContent]] = {}
    region = default_region
    for paragraph in paragraphs:
        body = paragraph.text
        md_heading = MD_HEADING.match(body) if markdown else None
        if md_heading or (not markdown and _looks_like_heading(body)):
            name = md_heading.group("text") if md_heading else body.strip()
            code = regions.resolve(name)
            if code is None:
                problems.append(
                    Problem(
                        paragraph.line,
                        f"unknown region heading {name!r} (known: {', '.join(regions.codes)}; "
                        "add an alias with REGION_ALIASES)",
                    )
                )
                continue
            region = code
            continue
        if not markdown and (code := regions.resolve(body)) is not None and "\n" not in body:
            region = code
            continue
        pattern = MD_BULLET if markdown else BULLET
        body = pattern.sub("", body, count=1) if pattern.match(body) else body
        items.setdefault(region, []).append(ItemContent(_kind(body), body))

    if not items and not problems:
        problems.append(Problem(0, "no items found: a bulletin needs at least one prayer item"))
    if problems:
        raise ImportFailed(source, problems)

    sections = tuple(
        Section(code, name, tuple(items[code])) for code, name in regions.regions if code in items
    )
    return BulletinContent(
        title=title,
        subject=title,
        scripture_text=scripture_text,
        scripture_reference=scripture_reference,
        sections=sections,
    )
