"""Which subscriber a link names: the one check behind every page a link in an email opens.

    subscriber, claims = holder_of(session, settings, token, Purpose.PREFERENCES)

A token is honoured only if a current key signed it for this purpose, within this purpose's lifetime,
bound to the named subscriber's current `link_secret` (`newsletter.mail.tokens`). Anything else is
`BadLink`, with the same answer whether the token was forged, cut short or names nobody, so a guesser
learns nothing. What each purpose may do is written in docs/security.md.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.exc import DataError
from sqlmodel import Session

from newsletter.core.config import Settings
from newsletter.core.errors import NewsletterError
from newsletter.core.models import Subscriber
from newsletter.mail.tokens import Claims, Purpose, TokenError, claimed_id, read_claims

_NOBODY_SECRET = "no subscriber has this secret: it is not 32 hex digits"
"""Verified against when the claimed id names nobody, so a missing row costs the same as a bad tag."""


class BadLink(NewsletterError):
    """A link that must not be honoured: `status` (400, or 404 for a missing bulletin) and `reason`."""

    def __init__(self, status: int, reason: str, purpose: Purpose) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.purpose = purpose


def max_age(settings: Settings, purpose: Purpose) -> timedelta:
    """How long a link of `purpose` is honoured."""
    if purpose is Purpose.CONFIRM:
        return timedelta(seconds=settings.CONFIRM_TTL)
    if purpose is Purpose.MY_DATA:
        return timedelta(seconds=settings.MY_DATA_TTL_SECONDS)
    return timedelta(days=settings.TOKEN_TTL_DAYS)


def holder_of(
    session: Session, settings: Settings, token: str, purpose: Purpose
) -> tuple[Subscriber, Claims]:
    """The subscriber `token` names for `purpose` and what the token says, or BadLink (400)."""
    try:
        subscriber = session.get(Subscriber, claimed_id(token))
        secret = subscriber.link_secret if subscriber is not None else _NOBODY_SECRET
        claims = read_claims(
            settings.secret_keys, token, purpose, max_age=max_age(settings, purpose), secret=secret
        )
    except TokenError as exc:
        raise BadLink(400, exc.reason, purpose) from exc
    except (OverflowError, DataError) as exc:  # an id beyond the column's range names nobody
        session.rollback()
        raise BadLink(400, "bad signature", purpose) from exc
    assert subscriber is not None  # the tag matched this subscriber's secret
    return subscriber, claims
