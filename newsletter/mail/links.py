"""The personal links in every email, and the per-recipient values that fill a rendered variant.

Paths (the web app routes exactly these and checks the token with `read_token`)::

    {BASE_URL}/unsubscribe/{token}              Purpose.UNSUBSCRIBE (GET page, POST one-click, RFC 8058)
    {BASE_URL}/preferences/{token}              Purpose.PREFERENCES
    {BASE_URL}/view/{bulletin_id}/{token}       Purpose.VIEW (only with ARCHIVE_ENABLED=false; otherwise
                                                "view online" is the public archive page, no token)
    {BASE_URL}/confirm/{token}                  Purpose.CONFIRM
    {BASE_URL}/my-data/{token}                  Purpose.MY_DATA (sent on request; export and erase)
    mailto:{UNSUBSCRIBE_MAILTO}?subject=unsubscribe-{token}   Purpose.UNSUBSCRIBE (when configured)
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from functools import cached_property

from newsletter.content import archive
from newsletter.content.types import PERSONAL_FIELDS, Recipient
from newsletter.core.config import Settings
from newsletter.mail.tokens import SIGNED_TOGETHER, Purpose, make_token, make_tokens

ALL_FIELDS = frozenset({*PERSONAL_FIELDS, "confirm_url"})

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")

EXAMPLE_TOKEN = "example"
"""Stands in for a token in a staff test send, which has no subscriber: the web app refuses it as
malformed, so a test email's links can be clicked without touching anyone's subscription."""


_PERSONAL_LINK = re.compile(r"^([^?#]*/(?:unsubscribe|preferences|confirm|my-data|view/\d+)/)[^?#/]+")
_ENCODED_WORD_START = "=?"
_WORD_JOINER = "\u2060"


def without_token(url: str) -> str:
    """`url` with the token of a personal link (the paths above) replaced by "…": a clicked link as the
    engagement report may keep it, counting clicks without recording whose link it was."""
    return _PERSONAL_LINK.sub(r"\1…", url)


def header_safe_name(name: str) -> str:
    """A display name, subject or title as header text that says exactly what it says, on one line.

    Every control character (CR, LF, NEL, U+2028…) becomes one space. `=?`, the start of an RFC 2047
    encoded word, gets an invisible WORD JOINER between its characters: Python's email package (and a
    receiving mail client) would otherwise decode `=?utf-8?b?…?=` into text carrying CR/LF, after this
    check, and the decoded text could add headers (Bcc:) or a body. The name is data, never encoding.
    """
    one_line = " ".join(_CONTROL.sub(" ", name).split())
    return one_line.replace(_ENCODED_WORD_START, "=" + _WORD_JOINER + "?")


_PURPOSE_OF_FIELD = (
    ("unsubscribe_url", Purpose.UNSUBSCRIBE),
    ("preferences_url", Purpose.PREFERENCES),
    ("view_url", Purpose.VIEW),
    ("confirm_url", Purpose.CONFIRM),
    ("my_data_url", Purpose.MY_DATA),
)


class Links:
    """Builds signed links for one installation. Create one per send (it reads the keys once, when the
    first real token is made, so previews and test sends work without a SECRET_KEY)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.base_url = settings.BASE_URL.rstrip("/")
        self.mailto_address = settings.UNSUBSCRIBE_MAILTO.strip()

    @cached_property
    def keys(self) -> tuple[str, ...]:
        return tuple(self.settings.secret_keys)

    def tokens(
        self, subscriber_id: int | None, secret: str, purposes: Iterable[Purpose], now: datetime | None = None
    ) -> dict[Purpose, str]:
        """The tokens of one email's links: those a bulletin carries all signed by one MAC
        (`make_tokens`), a confirmation's or a my-data link on its own."""
        purposes = list(purposes)
        if subscriber_id is None:
            return dict.fromkeys(purposes, EXAMPLE_TOKEN)
        together = [p for p in purposes if p in SIGNED_TOGETHER]
        tokens = make_tokens(self.keys, subscriber_id, together, secret=secret, now=now) if together else {}
        for purpose in purposes:
            if purpose not in tokens:
                tokens[purpose] = make_token(self.keys, subscriber_id, purpose, secret=secret, now=now)
        return tokens

    def url(self, purpose: Purpose, token: str, bulletin_id: int | None = None) -> str:
        """The link for `purpose` carrying `token` (the paths in the module docstring)."""
        if purpose == Purpose.VIEW:
            return f"{self.base_url}/view/{bulletin_id}/{token}"
        return f"{self.base_url}/{purpose.value}/{token}"

    def _one(self, purpose: Purpose, subscriber_id: int | None, secret: str, now: datetime | None) -> str:
        return self.url(purpose, self.tokens(subscriber_id, secret, [purpose], now)[purpose])

    def preferences_url(self, subscriber_id: int | None, secret: str, *, now: datetime | None = None) -> str:
        return self._one(Purpose.PREFERENCES, subscriber_id, secret, now)

    def confirm_url(self, subscriber_id: int | None, secret: str, *, now: datetime | None = None) -> str:
        return self._one(Purpose.CONFIRM, subscriber_id, secret, now)

    def my_data_url(self, subscriber_id: int, secret: str, *, now: datetime | None = None) -> str:
        """The short-lived export-and-erase link, sent only by email and only on request."""
        return self._one(Purpose.MY_DATA, subscriber_id, secret, now)

    def public_view_url(self, bulletin_id: int | None) -> str | None:
        """The bulletin online for everyone: its public archive page (nothing personal, safe to forward)
        when the archive is on, the site's home page without a bulletin; None when it is a personal link."""
        if bulletin_id is None:
            return f"{self.base_url}/"
        if self.settings.ARCHIVE_ENABLED:
            return self.base_url + archive.path(bulletin_id)
        return None

    def view_url(
        self, bulletin_id: int | None, subscriber_id: int | None, secret: str, *, now: datetime | None = None
    ) -> str:
        """The bulletin online: the public page (`public_view_url`), else this subscriber's own copy."""
        public = self.public_view_url(bulletin_id)
        if public is not None:
            return public
        return self.url(
            Purpose.VIEW, self.tokens(subscriber_id, secret, [Purpose.VIEW], now)[Purpose.VIEW], bulletin_id
        )

    def values(
        self,
        recipient: Recipient,
        *,
        fields: Iterable[str] = ALL_FIELDS,
        now: datetime | None = None,
    ) -> dict[str, str]:
        """Raw values for `fields` (by default PERSONAL_FIELDS and `confirm_url`), plus
        `unsubscribe_mailto` with the unsubscribe link when one is configured.

        Backends pass the fields the variant has placeholders for (`variant.html_placeholders`), so a
        bulletin recipient costs no confirmation token and a confirmation email no bulletin links. The
        view link is the public archive page when there is one, else the subscriber's own copy. A
        recipient without a subscriber id (a staff test send) gets example links that lead nowhere.
        `name` falls back to "friend" so that a greeting reads well for subscribers who gave no name.
        """
        wanted = fields if isinstance(fields, frozenset | set | dict) else set(fields)
        sid, secret, bulletin_id = recipient.subscriber_id, recipient.link_secret, recipient.bulletin_id
        values = {"name": header_safe_name(recipient.name) or "friend", "email": recipient.email}
        public_view = self.public_view_url(bulletin_id) if "view_url" in wanted else None
        if public_view is not None:
            values["view_url"] = public_view
        signed = [
            purpose
            for field, purpose in _PURPOSE_OF_FIELD
            if field in wanted and field not in values and (purpose != Purpose.MY_DATA or sid is not None)
        ]
        tokens = self.tokens(sid, secret, signed, now) if signed else {}
        for field, purpose in _PURPOSE_OF_FIELD:
            if purpose in tokens:
                values[field] = self.url(purpose, tokens[purpose], bulletin_id)
        if Purpose.UNSUBSCRIBE in tokens and self.mailto_address:
            values["unsubscribe_mailto"] = (
                f"mailto:{self.mailto_address}?subject=unsubscribe-{tokens[Purpose.UNSUBSCRIBE]}"
            )
        return values
