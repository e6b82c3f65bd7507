"""A name changed from the preference centre is announced to its owner.

The preferences link travels with every forwarded bulletin, so whoever holds it can change the name our
emails greet the owner by. So that the owner is never greeted by someone else's words without knowing
it, each change made there emails the owner at once (`notice_email`). The notice says that the name
changed, not what to (it carries no stranger's words into the owner's inbox), and links to the
preference centre, where the owner sees the name and can put it right.

A holder of the link could fill the owner's inbox with notices, so an address's name may be set there
`CHANGES_PER_ADDRESS` times per `LIMIT_WINDOW` (atomic: `ratelimit_store.take`); beyond that the form
refuses the change rather than make it unannounced. Clearing the name (the greeting is then "friend")
is always allowed, counts nothing and sends nothing: it carries nobody's words, and a stranger who has
used up the day's changes must not keep the owner from taking theirs away. An address we never email
again (bounced, complained, suppressed for good) gets no notice, and needs none: no bulletin greets it.

    if name and not name_change.allow(session, subscriber):  # a new, non-empty name
        ...refuse, try tomorrow or clear it...
    preferences.change_name(session, subscriber, name)
    notify = bool(name) and owner_mail.reachable(session, subscriber)
    session.commit()
    if notify:
        background.add_task(name_change.send_notice, settings, subscriber)
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlmodel import Session

from newsletter.audience import ratelimit_store
from newsletter.audience.owner_mail import one_link_email, send_to_owner
from newsletter.content.types import RenderedVariant
from newsletter.core.config import Settings
from newsletter.core.models import Subscriber, utcnow

FIELD = "preferences_url"
KEY = "name-changed"

CHANGES_PER_ADDRESS = 5
"""Name changes from the preference centre one address may have per `LIMIT_WINDOW`, each with its
notice: enough for a person correcting a typo or two."""
LIMIT_WINDOW = timedelta(days=1)


def allow(session: Session, subscriber: Subscriber, *, now: datetime | None = None) -> bool:
    """Whether the preference centre may change `subscriber`'s name now (counted when True)."""
    key = ratelimit_store.window_key("name-change-address", subscriber.email)
    return ratelimit_store.take(session, key, CHANGES_PER_ADDRESS, LIMIT_WINDOW, now=now or utcnow())


def notice_email(settings: Settings) -> RenderedVariant:
    """The notice (one placeholder, the owner's preference centre link, filled per recipient)."""
    org = settings.ORG_NAME
    said = (
        f"The name {org}'s emails greet you by was just changed, from the preference centre link in one "
        "of our emails to you."
    )
    if_you = "If you changed it, there is nothing to do."
    if_not = (
        "If you did not, someone has a copy of one of our emails to you (a forwarded email carries its "
        "links). Open your preference centre to see the name and put it right."
    )
    subject = f"Your name at {org} was changed"
    return one_link_email(KEY, subject, [said, if_you, if_not], ("My preference centre", FIELD))


def send_notice(settings: Settings, subscriber: Subscriber) -> bool:
    """Email `subscriber` that their name was changed; False (logged) when the ESP did not accept it."""
    return send_to_owner(settings, subscriber, notice_email(settings), "name-change notice")
