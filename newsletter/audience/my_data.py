"""The export-and-erase link: a short-lived credential sent by email, only when its owner asks for it.

The preferences link sits in every email, and "view online" pages are shared, so neither may download
or erase anyone's data (docs/security.md). The preference centre offers "email me a link"; that link
(`Purpose.MY_DATA`, valid `MY_DATA_TTL_SECONDS`) goes only to the subscriber's own address.

    if my_data.request_link(session, subscriber, client_ip=ip):
        session.commit()
        background.add_task(my_data.send_link, settings, subscriber)

The preferences link travels with every forwarded bulletin, so whoever holds it could make the owner's
inbox fill with these emails: `request_link` allows `LINKS_PER_ADDRESS` per address and
`LINKS_PER_IP` per client in `LIMIT_WINDOW`, and never emails an address that bounced, complained or
is otherwise suppressed for good. The page says the same whatever it decided.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlmodel import Session

from newsletter.audience import ratelimit_store
from newsletter.audience.owner_mail import one_link_email, reachable, send_to_owner
from newsletter.content.types import RenderedVariant
from newsletter.core.config import Settings
from newsletter.core.models import Subscriber, utcnow

log = logging.getLogger(__name__)

FIELD = "my_data_url"
KEY = "my-data-link"

LINKS_PER_ADDRESS = 3
"""My-data emails one address may receive per `LIMIT_WINDOW`: enough for a person who lost one."""
LINKS_PER_IP = 20
"""My-data emails one client may trigger per `LIMIT_WINDOW`, whichever preference links it holds."""
LIMIT_WINDOW = timedelta(hours=1)


def request_link(
    session: Session, subscriber: Subscriber, *, client_ip: str, now: datetime | None = None
) -> bool:
    """Whether to send `subscriber` their my-data link now (the caller commits, then `send_link`).

    False, counting nothing, for an address that bounced, complained or is suppressed for good; False
    when this client or this address had its share of links within `LIMIT_WINDOW` (atomic, like the
    confirmation emails' limits: `ratelimit_store.take`).
    """
    if not reachable(session, subscriber):
        log.info("data link for subscriber %s not sent: the address is suppressed", subscriber.id)
        return False
    now = now or utcnow()
    for key, limit in (
        (ratelimit_store.window_key("my-data-ip", client_ip), LINKS_PER_IP),
        (ratelimit_store.window_key("my-data-address", subscriber.email), LINKS_PER_ADDRESS),
    ):
        if not ratelimit_store.take(session, key, limit, LIMIT_WINDOW, now=now):
            log.info("data link for subscriber %s not sent: over the limit", subscriber.id)
            return False
    return True


def link_email(settings: Settings) -> RenderedVariant:
    """The email carrying the link (one placeholder, `my_data_url`, filled per recipient)."""
    org = settings.ORG_NAME
    minutes = max(1, settings.MY_DATA_TTL_SECONDS // 60)
    intro = f"You asked {org} for a link to download or erase the data we hold about you."
    note = f"The link works for {minutes} minutes. If you did not ask for it, ignore this email."
    return one_link_email(KEY, f"Your data at {org}", [intro], ("Download or erase my data", FIELD), [note])


def send_link(settings: Settings, subscriber: Subscriber) -> bool:
    """Email `subscriber` their export-and-erase link; False (logged) when the ESP did not accept it."""
    return send_to_owner(settings, subscriber, link_email(settings), "data link")
