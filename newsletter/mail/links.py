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
from newsletter.mail.tokens import Purpose, make_token

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

    def _token(self, subscriber_id: int | None, secret: str, purpose: Purpose, now: datetime | None) -> str:
        if subscriber_id is None:
            return EXAMPLE_TOKEN
        return make_token(self.keys, subscriber_id, purpose, secret=secret, now=now)

    def preferences_url(self, subscriber_id: int | None, secret: str, *, now: datetime | None = None) -> str:
        token = self._token(subscriber_id, secret, Purpose.PREFERENCES, now)
        return f"{self.base_url}/preferences/{token}"

    def view_url(
        self, bulletin_id: int | None, subscriber_id: int | None, secret: str, *, now: datetime | None = None
    ) -> str:
        """The bulletin online: its public archive page (nothing personal, safe to forward) when the
        archive is on, else this subscriber's own copy; the site's home page without a bulletin."""
        if bulletin_id is None:
            return f"{self.base_url}/"
        if self.settings.ARCHIVE_ENABLED:
            return self.base_url + archive.path(bulletin_id)
        return f"{self.base_url}/view/{bulletin_id}/{self._token(subscriber_id, secret, Purpose.VIEW, now)}"

    def confirm_url(self, subscriber_id: int | None, secret: str, *, now: datetime | None = None) -> str:
        return f"{self.base_url}/confirm/{self._token(subscriber_id, secret, Purpose.CONFIRM, now)}"

    def my_data_url(self, subscriber_id: int, secret: str, *, now: datetime | None = None) -> str:
        """The short-lived export-and-erase link, sent only by email and only on request."""
        return f"{self.base_url}/my-data/{self._token(subscriber_id, secret, Purpose.MY_DATA, now)}"

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
        bulletin recipient costs no confirmation token and a confirmation email no bulletin links: the
        tokens are most of the per-recipient work of a send. A recipient without a subscriber id (a
        staff test send) gets example links that lead nowhere. `name` falls back to "friend" so that a
        greeting reads well for subscribers who gave no name.
        """
        wanted = fields if isinstance(fields, frozenset | set | dict) else set(fields)
        sid, secret = recipient.subscriber_id, recipient.link_secret
        values = {"name": header_safe_name(recipient.name) or "friend", "email": recipient.email}
        if "unsubscribe_url" in wanted:
            unsubscribe = self._token(sid, secret, Purpose.UNSUBSCRIBE, now)
            values["unsubscribe_url"] = f"{self.base_url}/unsubscribe/{unsubscribe}"
            if self.mailto_address:
                values["unsubscribe_mailto"] = (
                    f"mailto:{self.mailto_address}?subject=unsubscribe-{unsubscribe}"
                )
        if "preferences_url" in wanted:
            values["preferences_url"] = self.preferences_url(sid, secret, now=now)
        if "view_url" in wanted:
            values["view_url"] = self.view_url(recipient.bulletin_id, sid, secret, now=now)
        if "confirm_url" in wanted:
            values["confirm_url"] = self.confirm_url(sid, secret, now=now)
        if "my_data_url" in wanted and sid is not None:
            values["my_data_url"] = self.my_data_url(sid, secret, now=now)
        return values
