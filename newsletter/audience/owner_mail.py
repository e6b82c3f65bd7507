"""One email to a subscriber's own address about their subscription: the my-data link, the notice that
their name was changed. Sent after the response (the caller commits first), never to anyone else."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from markupsafe import escape
from sqlmodel import Session

from newsletter.audience import suppressions
from newsletter.content.render import html_placeholder, text_placeholder
from newsletter.content.types import Recipient, RenderedVariant
from newsletter.core.config import Settings
from newsletter.core.models import Subscriber
from newsletter.core.status import SubscriberStatus
from newsletter.esp import EspError, backend_for

log = logging.getLogger(__name__)

UNREACHABLE = frozenset({SubscriberStatus.BOUNCED, SubscriberStatus.COMPLAINED})
"""Statuses whose address we never email again, whatever the suppression list says."""


def reachable(session: Session, subscriber: Subscriber) -> bool:
    """Whether we may still email `subscriber` at all: not after a bounce or a complaint, nor while a
    suppression only staff may lift holds the address."""
    return subscriber.status not in UNREACHABLE and not suppressions.blocks_subscription(
        suppressions.find(session, subscriber.email)
    )


def one_link_email(
    key: str, subject: str, before: Sequence[str], link: tuple[str, str], after: Sequence[str] = ()
) -> RenderedVariant:
    """A short email of plain paragraphs around one link, `link` = (its words, its placeholder field),
    the field filled per recipient by the backends (`mail.links`)."""
    words, field = link
    html_ph, text_ph = html_placeholder(field), text_placeholder(field)
    html = "".join(
        [
            "<!doctype html><html><body>",
            *(f"<p>{escape(p)}</p>" for p in before),
            f'<p><a href="{html_ph}">{escape(words)}</a></p>',
            *(f"<p>{escape(p)}</p>" for p in after),
            "</body></html>",
        ]
    )
    text = "\n\n".join([*before, f"{words}: {text_ph}", *after]) + "\n"
    return RenderedVariant(
        key=key,
        regions=(),
        subject=subject,
        html=html,
        text=text,
        html_placeholders={field: html_ph},
        text_placeholders={field: text_ph},
    )


def send_to_owner(settings: Settings, subscriber: Subscriber, email: RenderedVariant, what: str) -> bool:
    """Send `email` to `subscriber`'s address, greeting nobody by name (the name may be a stranger's
    words); False, logged with `what`, when the ESP did not accept it."""
    assert subscriber.id is not None
    recipient = Recipient(
        email=subscriber.email, name="", subscriber_id=subscriber.id, link_secret=subscriber.link_secret
    )
    backend = backend_for(settings)
    try:
        results = backend.send(email, [recipient])
    except EspError as exc:
        log.error("%s for subscriber %s not sent: %s", what, subscriber.id, exc)
        return False
    finally:
        backend.close()
    ok = bool(results) and all(r.accepted for r in results)
    if not ok:
        log.error("%s for subscriber %s refused: %s", what, subscriber.id, results)
    return ok
