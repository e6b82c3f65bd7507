"""SendGrid's Event Webhook body, turned into neutral `Event`s (pure: no database, no I/O).

    events = parse_events(body)   # the whole batch, or MalformedEvents naming the first fault

Each provider turns its own events into neutral ones (django-anymail's habit); applying them to the
ledger, subscribers and suppressions is `newsletter.sending.events`' job.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from newsletter.core.status import DeliveryStatus, SubscriberStatus

DELIVERY_STATUS_OF: dict[str, DeliveryStatus] = {
    "processed": DeliveryStatus.ACCEPTED,
    "deferred": DeliveryStatus.DEFERRED,
    "delivered": DeliveryStatus.DELIVERED,
    "bounce": DeliveryStatus.BOUNCED,
    "dropped": DeliveryStatus.DROPPED,
    "spamreport": DeliveryStatus.COMPLAINED,
}
"""SendGrid event → the delivery status it reports. Events not listed (open, click…) leave it alone."""


ENGAGEMENT_OF: dict[str, str] = {
    "delivered": "delivered",
    "open": "opened",
    "click": "clicked",
    "bounce": "bounced",
    "spamreport": "complained",
    "unsubscribe": "unsubscribed",
    "group_unsubscribe": "unsubscribed",
}
"""SendGrid event → the engagement metric it counts towards (`newsletter.sending.engagement.METRICS`).
A `blocked` bounce counts as bounced: the message did not arrive, whatever the cause."""


def clicked_url(event: Event) -> str:
    """The link a `click` event reports (SendGrid's `url` field), or "" when there is none."""
    if event.event != "click":
        return ""
    url = json.loads(event.payload).get("url")
    return url if isinstance(url, str) else ""


def reason_of(payload: str) -> str:
    """What SendGrid said about a bounce, block or drop (`reason`, else `response`), from a stored payload."""
    try:
        data = json.loads(payload)
    except ValueError:
        return ""
    if not isinstance(data, dict):
        return ""
    for key in ("reason", "response", "status"):
        value = data.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return ""


class MalformedEvents(ValueError):
    """The body is not a batch of SendGrid events; nothing of it may be stored."""


@dataclass(frozen=True)
class Event:
    """One ESP event, validated. `payload` is the event exactly as received, re-serialised as JSON."""

    esp_event_id: str
    event: str
    occurred_at: datetime
    email: str
    delivery_id: int | None
    bounce_type: str
    payload: str

    def subscriber_effect(self) -> SubscriberStatus | None:
        """The status this event gives the subscriber, if it changes one."""
        if self.event == "spamreport":
            return SubscriberStatus.COMPLAINED
        # "blocked" is a soft refusal (a reputation or content filter): the address itself may be fine.
        if self.event == "bounce" and self.bounce_type != "blocked":
            return SubscriberStatus.BOUNCED
        if self.event in ("unsubscribe", "group_unsubscribe"):
            return SubscriberStatus.UNSUBSCRIBED
        return None


def _delivery_id(raw: Any) -> int | None:
    """`custom_args.delivery_id` as SendGrid returns it (a string), or None for mail we did not tag."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw if 0 < raw < 2**63 else None
    if isinstance(raw, str) and raw.isascii() and raw.isdigit() and len(raw) < 19:
        return int(raw) or None
    return None


def parse_events(body: bytes | str) -> list[Event]:
    """The events of a webhook body (a JSON array of objects); MalformedEvents names the first fault.

    Every event needs `sg_event_id`, `event` and a numeric `timestamp`. Anything else SendGrid sends is
    kept in the payload. A batch with one bad event is refused whole, so a fixed retry stores it all.
    """
    try:
        # orjson refuses nesting deeper than 1024 with a ValueError: the stdlib parser would raise
        # RecursionError from deep in C, which a signed body of a million "[" could trigger.
        data = orjson.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedEvents(f"not JSON: {exc}") from exc
    if not isinstance(data, list):
        raise MalformedEvents("expected a JSON array of events")
    events: list[Event] = []
    for i, raw in enumerate(data):
        if not isinstance(raw, dict):
            raise MalformedEvents(f"event {i}: expected an object")
        event_id, name, stamp = raw.get("sg_event_id"), raw.get("event"), raw.get("timestamp")
        if not isinstance(event_id, str) or not 0 < len(event_id) <= 120:
            raise MalformedEvents(f"event {i}: sg_event_id missing or not a string of 1-120 characters")
        if not isinstance(name, str) or not 0 < len(name) <= 40:
            raise MalformedEvents(f"event {i}: event missing or not a string of 1-40 characters")
        if isinstance(stamp, bool) or not isinstance(stamp, int | float):
            raise MalformedEvents(f"event {i}: timestamp missing or not a number")
        try:
            occurred = datetime.fromtimestamp(stamp, UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise MalformedEvents(f"event {i}: timestamp out of range") from exc
        email = raw.get("email")
        bounce_type = raw.get("type")
        events.append(
            Event(
                esp_event_id=event_id,
                event=name,
                occurred_at=occurred,
                email=email.strip().lower() if isinstance(email, str) else "",
                delivery_id=_delivery_id(raw.get("delivery_id")),
                bounce_type=bounce_type if isinstance(bounce_type, str) else "",
                payload=json.dumps(raw, ensure_ascii=False, separators=(",", ":")),
            )
        )
    return events
