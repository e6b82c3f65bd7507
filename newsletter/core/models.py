"""The data model as SQLModel tables (each table and why it exists: `docs/architecture.md`).

Statuses are stored as short strings (vocabularies in `newsletter.core.status`) rather than database enums,
so that SQLite and PostgreSQL share one migration and a new status is not a schema change.
Times are aware datetimes, stored in UTC. The schema itself is created only by the Alembic migrations in
`newsletter/migrations`; `SQLModel.metadata` is what those migrations are checked against.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from newsletter.core.dialect import random_secret
from newsletter.core.status import BatchStatus, BulletinStatus, DeliveryStatus, ItemKind, SubscriberStatus


def utcnow() -> datetime:
    """Aware UTC now. SQLModel stores aware datetimes in UTC and returns them aware on both databases."""
    return datetime.now(UTC)


def email_hash(normalized_email: str) -> str:
    """The SHA-256 of a normalised address: how a suppression outlives the erasure of the address itself."""
    return hashlib.sha256(normalized_email.encode("utf-8")).hexdigest()


BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
"""64-bit ids on PostgreSQL; on SQLite an INTEGER PRIMARY KEY, which is the 64-bit rowid and autoincrements."""


def _fk(target: str, ondelete: str = "CASCADE") -> sa.ForeignKey:
    return sa.ForeignKey(target, ondelete=ondelete)


class Region(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(sa_type=sa.String(40), unique=True)
    name: str = Field(sa_type=sa.String(120))
    position: int = Field(default=0)


NEVER_REUSED = {"sqlite_autoincrement": True}
"""Table options for tables whose ids appear in links and cookies: SQLite's AUTOINCREMENT never hands a
deleted row's id to a new row (PostgreSQL sequences never do), so an old link cannot name a new person."""


class Subscriber(SQLModel, table=True):
    __table_args__ = (
        sa.Index("ix_subscriber_status_id", "status", "id"),
        # The admin's name search: a case-insensitive prefix, in name order, keyset-paginated.
        sa.Index("ix_subscriber_lower_name_id", sa.text("lower(name)"), "id"),
        NEVER_REUSED,
    )

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(sa_type=sa.String(320), unique=True)
    email_hash: str = Field(sa_type=sa.String(64), index=True)
    name: str = Field(default="", sa_type=sa.String(200))
    status: str = Field(default=SubscriberStatus.PENDING, sa_type=sa.String(16))
    source: str = Field(default="", sa_type=sa.String(40))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    confirmed_at: datetime | None = None
    unsubscribed_at: datetime | None = None
    paused_until: datetime | None = None
    # Every token in this subscriber's links is bound to it (newsletter.mail.tokens); erase destroys it.
    link_secret: str = Field(
        default_factory=lambda: secrets.token_hex(16),
        sa_type=sa.String(32),
        sa_column_kwargs={"server_default": random_secret()},  # for bulk inserts that do not name it
    )
    # An IANA zone name (`core.zones`); None means `TIMEZONE`, the default, whatever it is set to.
    timezone: str | None = Field(default=None, sa_type=sa.String(64))


class Subscription(SQLModel, table=True):
    """A subscriber's choice of one region. No row for a subscriber means no regions, not all of them."""

    __table_args__ = (sa.Index("ix_subscription_region", "region_id", "subscriber_id"),)

    subscriber_id: int = Field(sa_column_args=[_fk("subscriber.id")], primary_key=True)
    region_id: int = Field(sa_column_args=[_fk("region.id")], primary_key=True)


class Bulletin(SQLModel, table=True):
    __table_args__ = (sa.Index("ix_bulletin_status_send_at", "status", "send_at"),)

    id: int | None = Field(default=None, primary_key=True)
    title: str = Field(sa_type=sa.String(200))
    subject: str = Field(sa_type=sa.String(200))
    scripture_text: str = Field(default="", sa_type=sa.Text)
    scripture_reference: str = Field(default="", sa_type=sa.String(120))
    intro: str = Field(default="", sa_type=sa.Text)
    status: str = Field(default=BulletinStatus.DRAFT, sa_type=sa.String(16))
    send_at: datetime | None = None
    # A local-time send: the wall-clock slot (`YYYY-MM-DDTHH:MM`) each subscriber receives in their own
    # zone; `send_at` is then when the first zone's slot comes. None: everyone at once.
    local_send_at: str | None = Field(default=None, sa_type=sa.String(16))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    last_error: str = Field(default="", sa_type=sa.Text)
    # Set when the send paused because the ESP stopped answering: the worker probes the ESP and resumes
    # the bulletin by itself when it answers again (a person's pause has no such time, and stays).
    esp_down_since: datetime | None = None


class Item(SQLModel, table=True):
    __table_args__ = (sa.Index("ix_item_bulletin_position", "bulletin_id", "position"),)

    id: int | None = Field(default=None, primary_key=True)
    bulletin_id: int = Field(sa_column_args=[_fk("bulletin.id")])
    region_id: int = Field(sa_column_args=[_fk("region.id", "RESTRICT")])
    kind: str = Field(default=ItemKind.PRAY, sa_type=sa.String(16))
    position: int = 0
    body: str = Field(sa_type=sa.Text)


DELIVERY_FILLFACTOR = 30
"""How full PostgreSQL packs a new page of `delivery` (percent): the rest is room for recorded outcomes.

Recording an outcome is then a heap-only (HOT) update: no index holds a column it writes (status, times,
lease, message id), and the new version of the row fits on its page beside the old one, so no index gets
a new entry. A planned row takes about 105 bytes and a recorded one about 215, and a batch records a
page's rows in one transaction, so a page needs room for both versions of each row: 30% leaves it.
Measured on a million rows: recording takes less than half the time (every update heap-only, against
none with full pages and the old claim index), and the table takes 1.7 times the space of full pages.
The old versions are pruned in place."""


class Delivery(SQLModel, table=True):
    """One bulletin to one subscriber. Unique on the pair: planning twice never mails anyone twice.

    Its indexes hold only columns that never change after planning (id, bulletin, subscriber), so that
    recording an outcome writes no index (see `DELIVERY_FILLFACTOR`). A batch finds its rows by id range
    on the primary key; a bulletin's rows are found by the unique key's leading column.
    """

    __table_args__ = (
        sa.UniqueConstraint("bulletin_id", "subscriber_id", name="uq_delivery_bulletin_subscriber"),
        sa.Index("ix_delivery_subscriber", "subscriber_id"),
        {"postgresql_with": {"fillfactor": DELIVERY_FILLFACTOR}},
    )

    id: int | None = Field(default=None, sa_type=BigId, primary_key=True)
    bulletin_id: int = Field(sa_column_args=[_fk("bulletin.id")])
    # SET NULL: erasing a subscriber keeps the (anonymous) ledger of what was sent.
    subscriber_id: int | None = Field(default=None, sa_column_args=[_fk("subscriber.id", "SET NULL")])
    variant: str = Field(sa_type=sa.String(200))
    status: str = Field(default=DeliveryStatus.PENDING, sa_type=sa.String(16))
    attempts: int = 0
    # Not sent before this time: a local-time send's zone, or a retry's backoff.
    not_before: datetime | None = None
    # Unused since batches are leased as a whole (`SendBatch`); kept so that older rows still read.
    lease_expires_at: datetime | None = None
    # The lease (batch token: host, pid, random part) under which its latest outcome was recorded.
    leased_by: str | None = Field(default=None, sa_type=sa.String(80))
    last_error: str = Field(default="", sa_type=sa.Text)
    message_id: str | None = Field(default=None, sa_type=sa.String(200))
    sent_at: datetime | None = None
    updated_at: datetime | None = None
    # Every message id the ESP gave for this delivery, space-separated: more than one means it was sent
    # more than once (an ambiguous answer resent, a lease taken over from a worker that was only slow).
    message_ids: str = Field(default="", sa_type=sa.Text)
    # Attempts whose outcome is unknown: the ESP may have taken the batch (dropped connection after the
    # request, no answer within the timeout, a worker that died mid-send).
    ambiguous: int = 0
    # The ESP refused this address itself: `send --retry-failed` never queues it again.
    refused: bool = False


class SendBatch(SQLModel, table=True):
    """Deliveries of one bulletin and one variant that are leased and sent together: what a worker claims.

    Planning cuts each bulletin's new pending deliveries into batches: a batch is the deliveries of its
    `variant` with ids from `first_id` to `last_id`, and no two batches of a bulletin and variant share
    an id (`sending/queries/batches.py` says how this holds). Claiming a batch writes this one row,
    not a thousand deliveries; each delivery is written once, with its outcome. A batch is `sending`
    while leased; its deliveries still `pending` then and due at `leased_at`, and not yet recorded
    under `leased_by`, are the ones in flight.
    """

    __tablename__ = "send_batch"

    __table_args__ = (
        sa.Index("ix_send_batch_claim", "bulletin_id", "status", "id"),
        sa.Index("ix_send_batch_leased_by", "leased_by"),
    )

    id: int | None = Field(default=None, sa_type=BigId, primary_key=True)
    bulletin_id: int = Field(sa_column_args=[_fk("bulletin.id")])
    variant: str = Field(sa_type=sa.String(200))
    first_id: int = Field(sa_type=sa.BigInteger)
    last_id: int = Field(sa_type=sa.BigInteger)
    status: str = Field(default=BatchStatus.PENDING, sa_type=sa.String(16))
    not_before: datetime | None = None
    """When the earliest of its pending deliveries falls due (NULL: now)."""
    retrying: bool = False
    """Some of its pending deliveries wait for a retry (they have had an attempt)."""
    leased_by: str | None = Field(default=None, sa_type=sa.String(80))
    leased_at: datetime | None = None
    lease_expires_at: datetime | None = None
    updated_at: datetime | None = None


def of_bulletin(delivery: sa.FromClause, bulletin_id: Any) -> sa.ColumnElement[bool]:
    """The delivery is the bulletin's, tested as an expression (`bulletin_id + 0`) that no index serves,
    for statements that find their rows by primary key (a list of ids, a batch's range of at most a
    thousand). SQLite keeps no statistics, and PostgreSQL's are stale right after planning a million
    rows: either would otherwise walk the bulletin's part of the unique key, a million entries, per
    statement."""
    return delivery.c.bulletin_id + 0 == bulletin_id


def batch_members(
    delivery: sa.FromClause, bulletin_id: Any, variant: Any, first_id: Any, last_id: Any
) -> list[sa.ColumnElement[bool]]:
    """The one rule for which deliveries a batch holds: its bulletin's, of its variant, with ids from
    `first_id` to `last_id` (values, parameters, or a `send_batch` row's columns), found by primary key.
    """
    d = delivery.c
    return [of_bulletin(delivery, bulletin_id), d.variant == variant, d.id.between(first_id, last_id)]


class DeliveryEvent(SQLModel, table=True):
    """What the ESP reported about a message, stored raw and once per ESP event id."""

    __tablename__ = "delivery_event"

    __table_args__ = (sa.Index("ix_delivery_event_delivery", "delivery_id"),)

    id: int | None = Field(default=None, sa_type=BigId, primary_key=True)
    esp_event_id: str = Field(sa_type=sa.String(120), unique=True)
    delivery_id: int | None = Field(
        default=None, sa_type=BigId, sa_column_args=[_fk("delivery.id", "SET NULL")]
    )
    event: str = Field(sa_type=sa.String(40))
    occurred_at: datetime
    received_at: datetime = Field(default_factory=utcnow)
    payload: str = Field(sa_type=sa.Text)


class Suppression(SQLModel, table=True):
    """An address never to be mailed again. `email` may be erased; `email_hash` always stays."""

    id: int | None = Field(default=None, primary_key=True)
    email_hash: str = Field(sa_type=sa.String(64), unique=True)
    email: str | None = Field(default=None, sa_type=sa.String(320))
    reason: str = Field(sa_type=sa.String(16))
    note: str = Field(default="", sa_type=sa.Text)
    created_at: datetime = Field(default_factory=utcnow)


class User(SQLModel, table=True):
    __tablename__ = "app_user"
    __table_args__ = (NEVER_REUSED,)

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(sa_type=sa.String(320), unique=True)
    password_hash: str = Field(sa_type=sa.String(200))
    role: str = Field(sa_type=sa.String(16))
    is_active: bool = True
    failed_logins: int = 0
    locked_until: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    last_login_at: datetime | None = None
    # Part of every session cookie; raised on logout, password or role change, disable: old cookies die.
    session_version: int = 0


class TestSend(SQLModel, table=True):
    """A staff member's test of a bulletin. Never a delivery: it does not count and is never retried."""

    __tablename__ = "test_send"
    __test__ = False  # not a pytest test class

    id: int | None = Field(default=None, primary_key=True)
    bulletin_id: int = Field(sa_column_args=[_fk("bulletin.id")])
    user_id: int | None = Field(default=None, sa_column_args=[_fk("app_user.id", "SET NULL")])
    variant: str = Field(sa_type=sa.String(200))
    recipients: str = Field(sa_type=sa.Text)
    created_at: datetime = Field(default_factory=utcnow)
    error: str = Field(default="", sa_type=sa.Text)


class AuditEntry(SQLModel, table=True):
    """Who changed what, when, from what to what (`changes` is JSON: {field: [old, new]})."""

    __tablename__ = "audit_entry"
    __table_args__ = (
        sa.Index("ix_audit_entity", "entity_type", "entity_id", "at"),
        sa.Index("ix_audit_at", "at"),
    )

    id: int | None = Field(default=None, sa_type=BigId, primary_key=True)
    at: datetime = Field(default_factory=utcnow)
    actor: str = Field(sa_type=sa.String(320))
    action: str = Field(sa_type=sa.String(60))
    entity_type: str = Field(sa_type=sa.String(40))
    entity_id: int | None = None
    changes: str = Field(default="{}", sa_type=sa.Text)


class ScheduleSlot(SQLModel, table=True):
    """One row per fired slot of `SEND_SCHEDULE`: the unique key makes a slot fire once across processes."""

    __tablename__ = "schedule_slot"

    slot_at: datetime = Field(primary_key=True)
    fired_at: datetime = Field(default_factory=utcnow)
    bulletin_id: int | None = Field(default=None, sa_column_args=[_fk("bulletin.id", "SET NULL")])
    worker: str = Field(default="", sa_type=sa.String(80))


class SchedulerHeartbeat(SQLModel, table=True):
    """One row per scheduler process, rewritten every tick: the admin warns when none is recent."""

    __tablename__ = "scheduler_heartbeat"

    worker: str = Field(sa_type=sa.String(80), primary_key=True)
    started_at: datetime = Field(default_factory=utcnow)
    ticked_at: datetime = Field(default_factory=utcnow)


class RateEvent(SQLModel, table=True):
    """A counted action (a confirmation email to an address, from an IP) for sliding-window limits."""

    __tablename__ = "rate_event"
    __table_args__ = (sa.Index("ix_rate_event_key_at", "key", "at"),)

    id: int | None = Field(default=None, sa_type=BigId, primary_key=True)
    key: str = Field(sa_type=sa.String(200))
    at: datetime = Field(default_factory=utcnow)


class Engagement(SQLModel, table=True):
    """That a delivery reached an engagement metric (opened, clicked a link…), once per pair.

    The primary key makes "first time" an `INSERT … ON CONFLICT DO NOTHING`: replayed, duplicated
    and out-of-order events, and concurrent webhook batches, count a recipient once.
    """

    delivery_id: int = Field(sa_type=BigId, sa_column_args=[_fk("delivery.id")], primary_key=True)
    metric: str = Field(sa_type=sa.String(40), primary_key=True)


class EngagementCount(SQLModel, table=True):
    """Recipients per (bulletin, variant, metric): the rollup the engagement report reads."""

    __tablename__ = "engagement_count"

    bulletin_id: int = Field(sa_column_args=[_fk("bulletin.id")], primary_key=True)
    variant: str = Field(sa_type=sa.String(200), primary_key=True)
    metric: str = Field(sa_type=sa.String(16), primary_key=True)
    n: int = 0


class LinkClick(SQLModel, table=True):
    """Clicks on one link of a bulletin: all of them, and how many recipients clicked it."""

    __tablename__ = "link_click"

    bulletin_id: int = Field(sa_column_args=[_fk("bulletin.id")], primary_key=True)
    link_key: str = Field(sa_type=sa.String(40), primary_key=True)
    url: str = Field(sa_type=sa.Text)
    clicks: int = 0
    clickers: int = 0


def _table(model: type[SQLModel]) -> sa.Table:
    table: sa.Table = model.__table__  # type: ignore[attr-defined]
    return table


# Core handles for set-based statements (bulk import, planning, claims), typed for mypy.
REGION = _table(Region)
SUBSCRIBER = _table(Subscriber)
SUBSCRIPTION = _table(Subscription)
BULLETIN = _table(Bulletin)
ITEM = _table(Item)
DELIVERY = _table(Delivery)
SEND_BATCH = _table(SendBatch)
DELIVERY_EVENT = _table(DeliveryEvent)
SUPPRESSION = _table(Suppression)
USER = _table(User)
TEST_SEND = _table(TestSend)
AUDIT_ENTRY = _table(AuditEntry)
SCHEDULE_SLOT = _table(ScheduleSlot)
RATE_EVENT = _table(RateEvent)
SCHEDULER_HEARTBEAT = _table(SchedulerHeartbeat)
ENGAGEMENT = _table(Engagement)
ENGAGEMENT_COUNT = _table(EngagementCount)
LINK_CLICK = _table(LinkClick)
