"""A bulletin's content as plain values: what the importer produces and the renderer consumes.

Free of the database on purpose: parsing, rendering and previews take and return these, and
`newsletter.content.bulletins` converts between them and the tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from newsletter.core.status import ItemKind


@dataclass(frozen=True)
class ItemContent:
    kind: ItemKind
    body: str
    """Markdown source, kept exactly as written (curly quotes, dashes, stray asterisks and all)."""


@dataclass(frozen=True)
class Section:
    region_code: str
    region_name: str
    items: tuple[ItemContent, ...]


@dataclass(frozen=True)
class BulletinContent:
    title: str
    subject: str
    scripture_text: str
    """The verse without its enclosing quotation marks (templates add their own)."""
    scripture_reference: str
    sections: tuple[Section, ...]
    """Non-empty sections only, in region display order."""
    intro: str = ""
    id: int | None = None
    footer_note: str = field(default="", compare=False)
    send_time: datetime | None = None
    """When it is (or was) sent, for the dateline and `SUBJECT_TEMPLATE`; None: not planned yet (today)."""

    @property
    def region_codes(self) -> tuple[str, ...]:
        return tuple(s.region_code for s in self.sections)

    def only(self, regions: frozenset[str] | set[str]) -> tuple[Section, ...]:
        """The sections a subscriber of `regions` receives, in display order."""
        return tuple(s for s in self.sections if s.region_code in regions)


def variant_key(region_codes: tuple[str, ...] | list[str]) -> str:
    """The delivery ledger's name for a region set: codes in display order, comma-joined."""
    return ",".join(region_codes)


PERSONAL_FIELDS = ("name", "email", "unsubscribe_url", "preferences_url", "view_url")
"""Per-recipient values. A rendered variant holds a placeholder for each (see `RenderedVariant`), filled
by the ESP (SendGrid substitutions) or by `newsletter.content.render.personalize` for one-at-a-time backends."""


class Recipient(NamedTuple):
    """One addressee of a rendered variant. `delivery_id` is None for test sends and confirmations.

    A named tuple rather than a frozen dataclass: a send makes one per recipient, and a tuple is made
    in a fifth of the time."""

    email: str
    name: str
    subscriber_id: int | None
    delivery_id: int | None = None
    bulletin_id: int | None = None
    link_secret: str = ""
    """The subscriber's `link_secret`: every token in their links is bound to it (see `mail.tokens`)."""


@dataclass(frozen=True)
class RenderedVariant:
    """A message rendered once for a region set, with placeholders where per-recipient values go.

    `html_placeholders` and `text_placeholders` map each of PERSONAL_FIELDS to the literal token that
    stands for it in `html` and `text` respectively (different tokens, because the HTML part takes
    HTML-escaped values and the text part raw ones). The subject carries no placeholder.
    """

    key: str
    regions: tuple[str, ...]
    subject: str
    html: str
    text: str
    html_placeholders: dict[str, str] = field(compare=False, hash=False)
    text_placeholders: dict[str, str] = field(compare=False, hash=False)
    bulletin_id: int | None = None
    preheader: str = ""
