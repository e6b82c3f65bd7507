"""Reading a bulletin from text: the plain format of `subscribers/sample-bulletin.txt`, or Markdown.

Plain text::

    IJM Prayer Request                      ← title (first non-empty line)

    "When justice is done, …"               ← the verse, in quotes (may span lines; unquoted
    - Proverbs 21:15                          if a chapter-and-verse reference follows), then
                                              its reference, after -, – or —
    Pray for …                              ← items before any heading go to DEFAULT_REGION

    Latin America                           ← a region heading: a code, a name or an alias
    Praise God that …                       ← items: paragraphs, or lines starting with •
    [plain] IJM was founded in 1997.        ← an optional [pray], [praise] or [plain] marker

Item kinds (`item_kind`): a marker says it outright; otherwise "Praise…" is praise, "Pray…", "Ask…",
"Please pray…" and "Please ask…" are prayer requests, and anything else is plain (no label).

Markdown: `# Title`, the verse as a quoted line or `>` block, `## Region` headings, items as
paragraphs or `-`/`*`/`•` list entries. Bodies are kept exactly as written; the verse loses only a
pair of quotation marks that encloses all of it. Pure: text in, `BulletinContent` out, or `ImportFailed` naming the line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from newsletter.content.regions import RegionIndex
from newsletter.content.types import BulletinContent, ItemContent, Section
from newsletter.core.errors import ImportFailed, Problem
from newsletter.core.status import ItemKind

OPEN_QUOTES = "\"“„«»'‘"
QUOTE_PAIRS = {'"': '"', "“": "”", "„": "“”", "«": "»", "»": "«", "'": "'", "‘": "’"}
"""Opening quotation mark → the marks that close it (English, German, French and Swedish styles)."""
KIND_MARKER = re.compile(r"^\s*\[(?P<kind>pray|praise|plain)\]\s*", re.IGNORECASE)
PRAY_OPENINGS = ("pray", "ask", "please pray", "please ask")
CHAPTER_VERSE = re.compile(r"\d")
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


def _is_apostrophe(text: str, index: int) -> bool:
    """A ' or ’ between two letters (LORD’s, don't) is an apostrophe, not a quotation mark."""
    return (
        text[index] in "'’"
        and 0 < index < len(text) - 1
        and text[index - 1].isalpha()
        and text[index + 1].isalpha()
    )


def _encloses(text: str) -> bool:
    """True when the quotation mark opening `text` is closed by its last character, not before.

    `"For I know…," declares the LORD, "plans…"` starts and ends with a quote, but the first closes
    after "you,": stripping both would leave unbalanced quotes. Curly quotes nest; a straight `"` or
    `'` closes at the next one of its kind.
    """
    if len(text) < 2 or text[0] not in QUOTE_PAIRS or text[-1] not in QUOTE_PAIRS[text[0]]:
        return False
    opener, closers = text[0], QUOTE_PAIRS[text[0]]
    depth = 1
    for index in range(1, len(text) - 1):
        char = text[index]
        if _is_apostrophe(text, index):
            continue
        if char in closers:
            depth -= 1
        elif char == opener:
            depth += 1
        if depth == 0:
            return False
    return depth == 1


def strip_enclosing_quotes(text: str) -> str:
    """`text` without a pair of quotation marks that encloses all of it; inner quotes are kept."""
    text = text.strip()
    return text[1:-1].strip() if _encloses(text) else text


def item_kind(body: str) -> tuple[ItemKind, str]:
    """An item's kind and its body without a kind marker: the rule of the bulletin file format.

    A leading `[pray]`, `[praise]` or `[plain]` marker says it outright (and is removed). Otherwise an
    item starting with "Praise" is praise; one starting with "Pray", "Ask", "Please pray" or "Please
    ask" is a prayer request; anything else (a statement, news) is plain and gets no label.
    """
    marker = KIND_MARKER.match(body)
    if marker:
        return ItemKind(marker.group("kind").casefold()), body[marker.end() :]
    words = body.lstrip("*_ ").casefold()
    if words.startswith("praise"):
        return ItemKind.PRAISE, body
    if words.startswith(PRAY_OPENINGS):
        return ItemKind.PRAY, body
    return ItemKind.PLAIN, body


def _is_verse(paragraph: _Paragraph, raw: str, following: _Paragraph | None, markdown: bool) -> bool:
    """Quoted, a Markdown `>` block, or unquoted text directly followed by a chapter-and-verse reference."""
    if raw.lstrip()[:1] in OPEN_QUOTES:
        return True
    if markdown:  # a `- ` line is a list item there, never a reference of unquoted text
        return all(line.lstrip().startswith(">") for line in paragraph.lines)
    last = raw.split("\n")[-1] if "\n" in raw else (following.text.lstrip("> ") if following else "")
    ref = REFERENCE_DASH.match(last)
    return bool(ref and CHAPTER_VERSE.search(ref.group("ref")))


def _take_verse(paragraphs: list[_Paragraph], markdown: bool, problems: list[Problem]) -> tuple[str, str]:
    """Remove the verse and its reference from the front of `paragraphs`; ("", "") when there is none.

    The reference is the verse's last line, or the next paragraph, starting with a dash. Only a pair of
    quotation marks enclosing the whole verse is removed; quotes inside it stay as written.
    """
    if not paragraphs:
        return "", ""
    candidate = paragraphs[0]
    raw = "\n".join(line.lstrip("> ").rstrip() if markdown else line for line in candidate.lines)
    if not _is_verse(candidate, raw, paragraphs[1] if len(paragraphs) > 1 else None, markdown):
        return "", ""
    paragraphs.pop(0)
    verse_lines = raw.split("\n")
    ref = REFERENCE_DASH.match(verse_lines[-1]) if len(verse_lines) > 1 else None
    if ref:
        verse_lines = verse_lines[:-1]
    elif paragraphs and REFERENCE_DASH.match(paragraphs[0].text.lstrip("> ")):
        ref = REFERENCE_DASH.match(paragraphs.pop(0).text.lstrip("> "))
    if not ref:
        problems.append(Problem(candidate.line, "the verse has no reference line (e.g. '- Proverbs 21:15')"))
    return strip_enclosing_quotes("\n".join(verse_lines)), ref.group("ref") if ref else ""


def _sections(
    paragraphs: list[_Paragraph],
    regions: RegionIndex,
    default_region: str,
    markdown: bool,
    problems: list[Problem],
) -> dict[str, list[ItemContent]]:
    """Items by region code: headings switch the region (unknown ones are problems), the rest are items."""
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
        kind, body = item_kind(body)
        items.setdefault(region, []).append(ItemContent(kind, body))
    return items


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

    scripture_text, scripture_reference = _take_verse(paragraphs, markdown, problems)

    items = _sections(paragraphs, regions, default_region, markdown, problems)
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
