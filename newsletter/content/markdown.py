"""Item Markdown → safe HTML for the HTML part and wrapped plain text for the text part.

CommonMark with raw HTML disabled: whatever a writer types (`<script>`, `{{ }}`, `&`) reaches the
reader as text, never as markup. Links keep markdown-it's URL check (no `javascript:` and the like).
Bare URLs stay text (mail clients link them themselves). Indented code blocks and headings are off: in
pasted prayer requests an indented paragraph or a line of dashes is an accident, not a code block or
a heading.

Plain text is wrapped at 72 columns without ever breaking a word, so a URL always stands whole on one
line (even when that line is longer), where a mail client can still recognise it.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

from markdown_it import MarkdownIt
from markdown_it.token import Token

WIDTH = 72

_md = MarkdownIt("commonmark", {"html": False}).disable(["code", "heading", "lheading"])


def to_html(source: str) -> str:
    """Safe HTML for one item's Markdown (block elements: `<p>`, `<ul>`, `<blockquote>`…)."""
    return _md.render(source)


def wrap(text: str, width: int = WIDTH, *, initial: str = "", subsequent: str = "") -> str:
    """`text` wrapped at `width` columns, words (and so URLs) never broken, hard line breaks kept."""
    wrapper = textwrap.TextWrapper(
        width=width,
        initial_indent=initial,
        subsequent_indent=subsequent,
        break_long_words=False,
        break_on_hyphens=False,
    )
    out: list[str] = []
    for n, line in enumerate(text.split("\n")):
        if n:
            wrapper.initial_indent = subsequent
        out.append(wrapper.fill(line) or wrapper.initial_indent.rstrip())
    return "\n".join(out)


def to_text(source: str, width: int = WIDTH, *, first_prefix: str = "", indent: str = "") -> str:
    """One item's Markdown as plain text wrapped at `width`.

    `first_prefix` starts the first line (a bullet or a label) and `indent` every other line, so an
    item can be laid out as a hanging paragraph. Blocks are separated by one blank line.
    """
    blocks: list[str] = []
    # Paragraphs of one tight list follow each other without a blank line: each block notes its list.
    tight: list[int | None] = []
    lists_opened = 0
    hidden = False
    lists: list[list[int]] = []  # one [next number or -1 for bullets, list number] per open list
    quote = 0
    pending_marker = ""
    for token in _md.parse(source):
        if token.type == "bullet_list_open":
            lists.append([-1, lists_opened])
            lists_opened += 1
        elif token.type == "ordered_list_open":
            lists.append([int(token.attrGet("start") or 1), lists_opened])
            lists_opened += 1
        elif token.type in ("bullet_list_close", "ordered_list_close"):
            lists.pop()
        elif token.type == "list_item_open":
            counter = lists[-1]
            if counter[0] < 0:
                pending_marker = "- "
            else:
                pending_marker = f"{counter[0]}. "
                counter[0] += 1
        elif token.type == "paragraph_open":
            hidden = token.hidden
        elif token.type == "hr":
            blocks.append(indent + "* * *")
            tight.append(None)
        elif token.type == "blockquote_open":
            quote += 1
        elif token.type == "blockquote_close":
            quote -= 1
        elif token.type in ("inline", "fence", "code_block"):
            nest = "   " * max(len(lists) - 1, 0) + "> " * quote
            lead = indent + nest
            marker = pending_marker
            pending_marker = ""
            first = (first_prefix if not blocks else indent) + nest + marker
            rest = lead + " " * len(marker)
            if token.type == "inline":
                blocks.append(wrap(_inline_text(token.children or []), width, initial=first, subsequent=rest))
                tight.append(lists[-1][1] if hidden and lists else None)
            else:
                lines = token.content.rstrip("\n").split("\n")
                blocks.append("\n".join((first if i == 0 else rest) + line for i, line in enumerate(lines)))
                tight.append(None)
            hidden = False
    if not blocks:
        return first_prefix.rstrip()
    out = [blocks[0]]
    for n in range(1, len(blocks)):
        same_list = tight[n] is not None and tight[n] == tight[n - 1]
        out.append("\n" if same_list else "\n\n")
        out.append(blocks[n])
    return "".join(out)


def plain(source: str) -> str:
    """The words of `source` on one line, markup dropped: for previews and the preheader."""
    words: list[str] = []
    for token in _md.parse(source):
        if token.type == "inline":
            words.append(_inline_text(token.children or [], links=False))
        elif token.type in ("fence", "code_block"):
            words.append(token.content)
    return " ".join(" ".join(words).split())


def excerpt(source: str, limit: int = 110) -> str:
    """The first words of `source`, at most `limit` characters, cut at a word with an ellipsis."""
    text = plain(source)
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0].rstrip(",;:.-–—")
    return cut + "…"


def _inline_text(children: Sequence[Token], *, links: bool = True) -> str:
    parts: list[str] = []
    hrefs: list[tuple[str, int]] = []
    for child in children:
        kind = child.type
        if kind in ("text", "code_inline"):
            parts.append(child.content)
        elif kind == "softbreak":
            parts.append(" ")
        elif kind == "hardbreak":
            parts.append("\n")
        elif kind == "image":
            alt = "".join(c.content for c in child.children or [])
            parts.append(f"[{alt or 'image'}]")
        elif kind == "link_open":
            hrefs.append((str(child.attrGet("href") or ""), len(parts)))
        elif kind == "link_close" and hrefs:
            href, start = hrefs.pop()
            label = "".join(parts[start:]).strip()
            shown = href.removeprefix("mailto:")
            if links and href and label not in (href, shown):
                parts.append(f" ({href})")
    return "".join(parts)


def links(source: str) -> list[str]:
    """The targets of the links in one item's Markdown, as they appear in its HTML (normalised by
    markdown-it), in order: what a click event reports back, so a click can be traced to its item."""
    found: list[str] = []
    for token in _md.parse(source):
        for child in token.children or ():
            href = child.attrGet("href") if child.type == "link_open" else None
            if isinstance(href, str):
                found.append(href)
    return found
