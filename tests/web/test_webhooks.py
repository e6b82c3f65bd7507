"""The SendGrid Event Webhook over HTTP: signed batches move deliveries forward and suppress addresses;
anything unsigned, stale, replayed or malformed changes nothing."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from newsletter.audience import suppressions
from newsletter.audience.subscribers import normalize_email
from newsletter.core.config import Settings
from newsletter.core.db import session_scope
from newsletter.core.models import (
    DELIVERY,
    SUBSCRIBER,
    AuditEntry,
    Bulletin,
    Delivery,
    DeliveryEvent,
    Subscriber,
    Suppression,
)
from newsletter.core.status import DeliveryStatus, SubscriberStatus, SuppressionReason
from newsletter.esp.sendgrid.events import MalformedEvents, parse_events
from newsletter.esp.sendgrid.personalization import esp_address
from newsletter.esp.sendgrid.signature import SIGNATURE_HEADER, TIMESTAMP_HEADER
from newsletter.web import webhooks
from tests.factories import MakeSubscriber
from tests.fixtures_web import LiveServer, start_live_server
from tests.web.signing import URL, Signer

Post = Callable[..., httpx.Response]


@pytest.fixture
def post(server: LiveServer, signer: Signer) -> Post:
    def send(
        events: list[dict[str, Any]] | bytes,
        *,
        timestamp: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        body = events if isinstance(events, bytes) else json.dumps(events).encode()
        return server.client.post(URL, content=body, headers=headers or signer.headers(body, timestamp))

    return send


@pytest.fixture
def ledger(engine: Engine, make_subscriber: MakeSubscriber, session: Session) -> dict[str, int]:
    """Five subscribers, each with an `accepted` delivery of one sent bulletin: address → delivery id."""
    bulletin = Bulletin(title="Week 12", subject="Week 12", status="sent")
    people = {}
    for name in ("ann", "bob", "cat", "dan", "eve"):
        people[name] = make_subscriber(f"{name}@example.org", regions=["africa"])
    session.add(bulletin)
    session.flush()
    ids = {}
    for name, person in people.items():
        delivery = Delivery(
            bulletin_id=bulletin.id, subscriber_id=person.id, variant="africa", status="accepted"
        )
        session.add(delivery)
        session.flush()
        ids[name] = delivery.id
    session.commit()
    session.close()
    return ids


def event(name: str, kind: str, delivery_id: int | None, n: int, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "email": f"{name}@example.org",
        "timestamp": 1_700_000_000 + n,
        "event": kind,
        "sg_event_id": f"evt-{name}-{kind}-{n}",
        "sg_message_id": f"msg-{name}.filter",
        "bulletin_id": "1",
    }
    if delivery_id is not None:
        body["delivery_id"] = str(delivery_id)
    body.update(extra)
    return body


def statuses(engine: Engine) -> dict[str, str]:
    with Session(engine) as s:
        rows = s.execute(
            sa.select(SUBSCRIBER.c.email, DELIVERY.c.status).join(
                DELIVERY,
                DELIVERY.c.subscriber_id == SUBSCRIBER.c.id,
            )
        ).all()
    return {email.split("@")[0]: status for email, status in rows}


def people(engine: Engine) -> dict[str, str]:
    with Session(engine) as s:
        return {p.email.split("@")[0]: p.status for p in s.exec(select(Subscriber)).all()}


def suppressed(engine: Engine) -> dict[str, str]:
    with Session(engine) as s:
        return {str(x.email).split("@")[0]: x.reason for x in s.exec(select(Suppression)).all()}


def event_count(engine: Engine) -> int:
    with Session(engine) as s:
        return int(s.execute(sa.select(sa.func.count()).select_from(DeliveryEvent)).scalar_one())


def test_a_signed_batch_updates_deliveries_subscribers_and_suppressions(engine, ledger, post) -> None:
    d = ledger
    batch = [
        event("ann", "processed", d["ann"], 1),
        event("ann", "delivered", d["ann"], 2),
        event("ann", "open", d["ann"], 3),
        event("ann", "click", d["ann"], 4, url="https://example.org"),
        event("bob", "bounce", d["bob"], 1, type="bounce", reason="550 5.1.1 no such user"),
        event("cat", "bounce", d["cat"], 1, type="blocked", reason="421 try later"),
        event("dan", "delivered", d["dan"], 1),
        event("dan", "spamreport", d["dan"], 2),
        event("eve", "delivered", d["eve"], 1),
        event("eve", "unsubscribe", d["eve"], 2),
        event("stranger", "group_unsubscribe", None, 1, asm_group_id=1),
    ]
    answer = post(batch)
    assert answer.status_code == 200 and answer.json() == {"received": 11, "new": 11}
    assert statuses(engine) == {
        "ann": DeliveryStatus.DELIVERED,
        "bob": DeliveryStatus.BOUNCED,
        "cat": DeliveryStatus.BOUNCED,  # this message bounced, but a block does not condemn the address
        "dan": DeliveryStatus.COMPLAINED,
        "eve": DeliveryStatus.DELIVERED,
    }
    assert people(engine) == {
        "ann": SubscriberStatus.ACTIVE,
        "bob": SubscriberStatus.BOUNCED,
        "cat": SubscriberStatus.ACTIVE,
        "dan": SubscriberStatus.COMPLAINED,
        "eve": SubscriberStatus.UNSUBSCRIBED,
    }
    assert suppressed(engine) == {
        "bob": SuppressionReason.BOUNCE,
        "dan": SuppressionReason.COMPLAINT,
        "eve": SuppressionReason.UNSUBSCRIBE,
        "stranger": SuppressionReason.UNSUBSCRIBE,
    }
    assert event_count(engine) == 11
    with Session(engine) as s:
        stored = s.exec(select(DeliveryEvent).where(DeliveryEvent.event == "click")).one()
    assert stored.delivery_id == d["ann"] and json.loads(stored.payload)["url"] == "https://example.org"


def test_the_public_key_may_also_be_given_as_pem(settings, engine, ledger, signer) -> None:
    body = json.dumps([event("ann", "delivered", ledger["ann"], 1)]).encode()
    with start_live_server(
        settings.model_copy(update={"SENDGRID_WEBHOOK_PUBLIC_KEY": signer.public_pem})
    ) as live:
        assert live.client.post(URL, content=body, headers=signer.headers(body)).status_code == 200
    assert statuses(engine)["ann"] == DeliveryStatus.DELIVERED


def _nothing_changed(engine: Engine) -> None:
    assert event_count(engine) == 0
    assert set(statuses(engine).values()) == {DeliveryStatus.ACCEPTED}
    assert set(people(engine).values()) == {SubscriberStatus.ACTIVE}
    assert suppressed(engine) == {}


def test_a_bad_signature_changes_nothing(engine, ledger, post, signer) -> None:
    body = json.dumps([event("bob", "bounce", ledger["bob"], 1, type="bounce")]).encode()
    headers = signer.headers(body)
    tampered = body.replace(b"bounce", b"bounce ", 1)
    assert post(tampered, headers=headers).status_code == 403
    other = Signer().headers(body)
    assert post(body, headers=other).status_code == 403
    assert post(body, headers={"Content-Type": "application/json"}).status_code == 403
    garbage = {**headers, SIGNATURE_HEADER: "not base64!"}
    assert post(body, headers=garbage).status_code == 403
    moved = {**headers, TIMESTAMP_HEADER: str(int(headers[TIMESTAMP_HEADER]) + 1)}  # signature covers it
    assert post(body, headers=moved).status_code == 403
    _nothing_changed(engine)


def test_a_stale_timestamp_is_refused_even_when_signed(settings, engine, ledger, post) -> None:
    batch = [event("bob", "bounce", ledger["bob"], 1, type="bounce")]
    old = int(time.time()) - settings.WEBHOOK_MAX_AGE_SECONDS - 60
    assert post(batch, timestamp=old).status_code == 403
    assert post(batch, timestamp=int(time.time()) + settings.WEBHOOK_MAX_AGE_SECONDS + 60).status_code == 403
    _nothing_changed(engine)


@pytest.mark.parametrize(
    "signing",
    [
        {},
        {TIMESTAMP_HEADER: "1700000000", SIGNATURE_HEADER: "c2lnbmF0dXJl"},
        {TIMESTAMP_HEADER: str(int(time.time())), SIGNATURE_HEADER: ""},
        {TIMESTAMP_HEADER: str(int(time.time())), SIGNATURE_HEADER: "c2lnbmF0dXJl"},
        {TIMESTAMP_HEADER: str(int(time.time())), SIGNATURE_HEADER: "MEUCIQ" + "A" * 2000},
    ],
    ids=["unsigned", "stale", "no signature", "not a DER signature", "too long a signature"],
)
def test_a_request_that_cannot_be_sendgrids_is_refused_before_its_body_is_read(
    settings, server, signing: dict[str, str]
) -> None:
    """Announce a body of nearly MAX_WEBHOOK_BYTES and send none of it: the answer comes at once."""
    headers = {"Content-Type": "application/json", **signing}
    with raw_request(server, headers, length=settings.MAX_WEBHOOK_BYTES - 1) as conn:
        answer = conn.recv(4096)  # no body sent: a server reading it first would never answer
    assert answer.startswith(b"HTTP/1.1 403 ")


def raw_request(
    server: LiveServer, headers: dict[str, str], *, length: int, body: bytes = b""
) -> socket.socket:
    """A POST to the webhook, written by hand: its head announcing `length` bytes, then `body` (the
    start of them, or nothing), the connection left open."""
    host, port = server.url.removeprefix("http://").split(":")
    head = [f"POST {URL} HTTP/1.1", f"Host: {host}", f"Content-Length: {length}"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    conn = socket.create_connection((host, int(port)), timeout=5)
    conn.sendall(("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body)
    return conn


@pytest.fixture
def proxied(settings: Settings, signer: Signer) -> Iterator[LiveServer]:
    """The app behind a trusted proxy on loopback: `X-Forwarded-For` names the client."""
    update = {"SENDGRID_WEBHOOK_PUBLIC_KEY": signer.public_base64, "TRUSTED_PROXIES": "127.0.0.1"}
    with start_live_server(settings.model_copy(update=update)) as live:
        yield live


def endless_body(server: LiveServer, signer: Signer, client: str) -> socket.socket:
    """A request that passes every check made before the body (a fresh timestamp, a well-formed
    signature), announces 1000 bytes and sends one."""
    headers = {"X-Forwarded-For": client, **signer.headers(b"[]", None)}
    return raw_request(server, headers, length=1000, body=b"[")


def post_as(server: LiveServer, signer: Signer, client: str) -> httpx.Response:
    body = json.dumps([event("ann", "processed", None, 1)]).encode()
    return server.client.post(URL, content=body, headers={**signer.headers(body), "X-Forwarded-For": client})


def test_bodies_in_flight_are_bounded_and_a_burst_is_asked_to_retry(proxied, signer, monkeypatch) -> None:
    """A fresh timestamp and a well-formed signature cost a stranger nothing: each such request may hold
    a body of up to MAX_WEBHOOK_BYTES, so only BODIES_AT_ONCE are read at a time. One more is answered
    503 with Retry-After (SendGrid retries); the slots come back when those clients go away."""
    monkeypatch.setattr(webhooks, "SLOT_WAIT_SECONDS", 0.5)
    slow = [endless_body(proxied, signer, f"198.51.100.{n}") for n in range(webhooks.BODIES_AT_ONCE)]
    try:
        time.sleep(0.3)  # the server has taken them in
        busy = post_as(proxied, signer, "203.0.113.9")
        assert busy.status_code == 503 and busy.headers["Retry-After"].isdigit()
    finally:
        for conn in slow:
            conn.close()
    deadline = time.monotonic() + 5
    while (
        answer := post_as(proxied, signer, "203.0.113.9")
    ).status_code == 503 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert answer.status_code == 200


def test_one_client_holds_at_most_its_share_of_the_slots(proxied, signer) -> None:
    slow = [endless_body(proxied, signer, "198.51.100.1") for _ in range(webhooks.BODIES_PER_CLIENT)]
    try:
        time.sleep(0.3)
        started = time.monotonic()
        assert post_as(proxied, signer, "198.51.100.1").status_code == 503
        assert time.monotonic() - started < webhooks.SLOT_WAIT_SECONDS / 2, "refused at once"
        assert post_as(proxied, signer, "203.0.113.9").status_code == 200  # the others are served
    finally:
        for conn in slow:
            conn.close()


def test_a_body_that_trickles_in_is_refused_and_frees_its_slot(proxied, signer, monkeypatch) -> None:
    """A sender that announces a body and sends a byte now and then cannot hold a slot: the body must
    arrive at MIN_BYTES_PER_SECOND of its announced length, after a grace period."""
    monkeypatch.setattr(webhooks, "BODY_GRACE_SECONDS", 0.5)
    slow = [endless_body(proxied, signer, f"198.51.100.{n}") for n in range(webhooks.BODIES_AT_ONCE)]
    try:
        for conn in slow:
            assert conn.recv(4096).startswith(b"HTTP/1.1 408 ")
    finally:
        for conn in slow:
            conn.close()
    assert post_as(proxied, signer, "203.0.113.9").status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b'{"event": "delivered"}',
        b"[1, 2]",
        b'[{"event": "delivered", "timestamp": 1700000000}]',
        b'[{"sg_event_id": "a", "timestamp": 1700000000}]',
        b'[{"sg_event_id": "a", "event": "delivered", "timestamp": "yesterday"}]',
        b'[{"sg_event_id": "a", "event": "delivered", "timestamp": 1700000000}, {"sg_event_id": 7}]',
        b"\xff\xfe[]",
    ],
)
def test_a_malformed_body_is_400_and_stores_nothing(engine, ledger, post, body) -> None:
    assert post(body).status_code == 400
    _nothing_changed(engine)


def test_a_replayed_batch_changes_nothing(engine, ledger, post) -> None:
    batch = [event("bob", "bounce", ledger["bob"], 1, type="bounce")]
    assert post(batch).json() == {"received": 1, "new": 1}
    with session_scope(engine) as s:  # staff lift the suppression after checking the address
        suppressions.remove(s, "bob@example.org")
    again = post(batch)
    assert again.status_code == 200 and again.json() == {"received": 1, "new": 0}
    assert suppressed(engine) == {} and event_count(engine) == 1


@pytest.mark.parametrize(
    ("order", "final"),
    [
        (["delivered", "processed"], DeliveryStatus.DELIVERED),
        (["delivered", "deferred", "processed"], DeliveryStatus.DELIVERED),
        (["deferred", "processed"], DeliveryStatus.DEFERRED),
        (["bounce", "delivered"], DeliveryStatus.BOUNCED),
        (["dropped", "processed", "delivered"], DeliveryStatus.DROPPED),
        (["delivered", "spamreport", "delivered"], DeliveryStatus.COMPLAINED),
    ],
)
@pytest.mark.parametrize("batches", ["one batch", "one batch per event"])
def test_out_of_order_events_end_in_the_right_state(engine, ledger, post, order, final, batches) -> None:
    events = [event("ann", kind, ledger["ann"], n, type="bounce") for n, kind in enumerate(order)]
    if batches == "one batch":
        assert post(events).status_code == 200
    else:
        for one in events:
            assert post([one]).status_code == 200
    assert statuses(engine)["ann"] == final


def test_events_for_unknown_deliveries_are_stored_without_one(engine, ledger, post) -> None:
    odd = event("ann", "open", None, 2)
    odd["delivery_id"] = "not-a-number"
    batch = [event("ann", "delivered", 987_654, 1), odd]
    assert post(batch).status_code == 200
    with Session(engine) as s:
        assert [e.delivery_id for e in s.exec(select(DeliveryEvent)).all()] == [None, None]
    assert statuses(engine)["ann"] == DeliveryStatus.ACCEPTED


def test_without_a_configured_key_every_request_is_refused(settings, engine, ledger, signer) -> None:
    body = json.dumps([event("ann", "delivered", ledger["ann"], 1)]).encode()
    with start_live_server(settings) as live:  # SENDGRID_WEBHOOK_PUBLIC_KEY is empty
        assert live.client.post(URL, content=body, headers=signer.headers(body)).status_code == 503
    _nothing_changed(engine)


def confirmation_emails(server: LiveServer, settings: Settings) -> list[EmailMessage]:
    """Every confirmation email sent so far (they go out after the answer: wait for them)."""
    assert server.app.state.background.wait_idle(30)
    folder = Path(settings.OUTBOX_DIR) / "direct"
    parse = BytesParser(policy=policy.default).parsebytes
    return [parse(p.read_bytes()) for p in sorted(folder.glob("*.eml"))]  # type: ignore[misc]


def test_a_complaint_or_bounce_after_an_unsubscribe_keeps_the_address_out_for_good(
    settings, engine, ledger, post, server
) -> None:
    d = ledger

    def subscribe(name: str) -> None:  # anyone may type anyone's address
        data = {"email": f"{name}@example.org", "name": "", "regions": ["africa"]}
        assert server.client.post("/subscribe", data=data).status_code == 200

    assert post(
        [event("dan", "unsubscribe", d["dan"], 1), event("eve", "unsubscribe", d["eve"], 1)]
    ).is_success
    subscribe("dan")  # while they have only unsubscribed, the owner may come back by confirming
    (earlier,) = confirmation_emails(server, settings)
    confirm_link = re.search(r"/confirm/[A-Za-z0-9_-]{40}", earlier.get_body(("plain",)).get_content())  # type: ignore[union-attr]
    assert confirm_link is not None

    # Then the ESP reports, about mail it took before they left, a spam report and a hard bounce.
    later = [event("dan", "spamreport", d["dan"], 2), event("eve", "bounce", d["eve"], 2, type="bounce")]
    assert post(later).is_success
    assert people(engine) == {
        "ann": "active",
        "bob": "active",
        "cat": "active",
        "dan": "complained",
        "eve": "bounced",
    }
    assert suppressed(engine) == {"dan": SuppressionReason.COMPLAINT, "eve": SuppressionReason.BOUNCE}
    with Session(engine) as s:
        audited = s.exec(
            select(AuditEntry).where(
                col(AuditEntry.action).in_(["subscriber.complained", "subscriber.bounced"])
            )
        ).all()
    assert sorted((a.action, a.actor, json.loads(a.changes)["status"][0]) for a in audited) == [
        ("subscriber.bounced", "sendgrid", "unsubscribed"),
        ("subscriber.complained", "sendgrid", "unsubscribed"),
    ]

    # A later unsubscribe weakens nothing; the address never gets another confirmation email, and
    # the one sent before the complaint no longer confirms.
    assert post(
        [event("dan", "unsubscribe", d["dan"], 3), event("eve", "unsubscribe", d["eve"], 3)]
    ).is_success
    subscribe("dan")
    subscribe("eve")
    assert len(confirmation_emails(server, settings)) == 1
    assert server.client.post(confirm_link.group(0)).status_code == 400
    assert {k: people(engine)[k] for k in ("dan", "eve")} == {"dan": "complained", "eve": "bounced"}
    assert suppressed(engine) == {"dan": SuppressionReason.COMPLAINT, "eve": SuppressionReason.BOUNCE}


def test_an_address_the_esp_reports_in_another_case_is_the_subscribers_own(
    engine, post, make_subscriber
) -> None:
    make_subscriber("zoe@bücher.de")
    bounce = {**event("zoe", "bounce", None, 1, type="bounce"), "email": "Zoe@BÜCHER.DE"}
    assert post([bounce]).status_code == 200
    assert people(engine) == {"zoe": SubscriberStatus.BOUNCED}
    with Session(engine) as s:
        found = suppressions.find(s, normalize_email("zoe@bücher.de"))
        assert found is not None and (found.email, found.reason) == (
            "zoe@bücher.de",
            SuppressionReason.BOUNCE,
        )


def test_a_complaint_naming_the_ascii_spelling_sendgrid_was_given_reaches_the_subscriber(
    engine, post, make_subscriber
) -> None:
    """SendGrid is given an internationalised domain in its ASCII form, so its events name that form;
    the subscriber is stored as typed. The complaint still marks them, and the suppression holds both
    spellings: the stored one (what the send path and the sign-up form check) and the reported one."""
    carol = make_subscriber("carol@bücher.de")
    reported = esp_address(carol.email)
    assert reported == "carol@xn--bcher-kva.de"
    complaint = {**event("carol", "spamreport", None, 1), "email": reported}
    assert post([complaint]).status_code == 200
    assert people(engine) == {"carol": SubscriberStatus.COMPLAINED}
    with Session(engine) as s:
        for spelling in ("carol@bücher.de", "carol@xn--bcher-kva.de"):
            found = suppressions.find(s, spelling)
            assert found is not None and found.reason == SuppressionReason.COMPLAINT, spelling


# --- the parser on its own ---------------------------------------------------------------------------
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=20,
)
_event = st.fixed_dictionaries(
    {
        "sg_event_id": st.text(min_size=1, max_size=20),
        "event": st.sampled_from(["delivered", "bounce", "open"]),
        "timestamp": st.integers(0, 2**31),
    },
    optional={"email": _json, "delivery_id": _json, "type": _json},
)


@given(st.one_of(_json, st.lists(_event | _json, max_size=5)))
def test_the_parser_accepts_a_batch_or_refuses_it_whole(data: Any) -> None:
    body = json.dumps(data).encode()
    try:
        events = parse_events(body)
    except MalformedEvents:
        return
    assert isinstance(data, list) and len(events) == len(data)
    for parsed, raw in zip(events, data, strict=True):
        assert parsed.esp_event_id == raw["sg_event_id"] and json.loads(parsed.payload) == raw
        assert parsed.delivery_id is None or parsed.delivery_id > 0
