"""The engagement report from signed SendGrid webhooks: every figure of `newsletter report --json`
against counts this test works out on its own from the events it sent (duplicates, replays and
out-of-order arrival included), and nothing in the report that says who did what."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlmodel import Session, select
from typer.testing import Result

from newsletter.content.types import Recipient
from newsletter.core.config import Settings
from newsletter.core.models import Bulletin, Delivery
from newsletter.core.status import DeliveryStatus
from newsletter.mail.links import Links
from tests.factories import REGION_CODES, MakeBulletin, MakeSubscribers
from tests.fixtures_web import LiveServer
from tests.web.signing import URL, Signer

METRICS = ("delivered", "opened", "clicked", "bounced", "complained", "unsubscribed")
METRIC_OF = {
    "delivered": "delivered",
    "open": "opened",
    "click": "clicked",
    "bounce": "bounced",
    "spamreport": "complained",
    "unsubscribe": "unsubscribed",
    "group_unsubscribe": "unsubscribed",
}
LINKS = {
    "africa": "https://example.org/ghana-conference",
    "south-asia": "https://example.org/rescue?case=12&lang=en",
    "global": "https://example.org/jobs",
}
BULLETIN = """Links week

"Let justice roll on like a river."

- Amos 5:24

Africa

Pray for the [conference in Ghana]({africa}).

Pray for the courts.

Latin America

Praise God for 2,500 trained officers.

South Asia

Ask for wisdom in the [rescue work]({south}).

IJM HQ & Global Partners

Pray for [new colleagues]({jobs}).
""".format(africa=LINKS["africa"], south=LINKS["south-asia"], jobs=LINKS["global"])
ITEM_OF = {
    LINKS["africa"]: ("africa", 1),
    LINKS["south-asia"]: ("south-asia", 1),
    LINKS["global"]: ("global", 1),
}


def post(server: LiveServer, signer: Signer, events: list[dict[str, Any]]) -> httpx.Response:
    body = json.dumps(events).encode()
    response = server.client.post(URL, content=body, headers=signer.headers(body))
    assert response.status_code == 200, response.text
    return response


def sent_bulletin(session: Session, make_bulletin: MakeBulletin, text: str, days_ago: int) -> Bulletin:
    """A bulletin that went out `days_ago` days ago, with its deliveries planned for every subscriber."""
    from newsletter.sending import lifecycle

    bulletin = make_bulletin(text)
    assert bulletin.id is not None
    lifecycle.send_now(session, bulletin.id)
    bulletin.started_at = datetime.now(UTC) - timedelta(days=days_ago)
    session.add(bulletin)
    session.commit()
    return bulletin


def sendgrid_events(
    rng: random.Random, deliveries: dict[int, str], unsubscribe_link: str
) -> list[dict[str, Any]]:
    """Events as SendGrid would send them for these deliveries, with repeated opens and clicks."""
    events: list[dict[str, Any]] = []

    def add(did: int, kind: str, **extra: Any) -> None:
        n = len(events)
        events.append(
            {
                "email": f"d{did}@example.org",
                "timestamp": 1_800_000_000 + n,
                "event": kind,
                "sg_event_id": f"evt-{did}-{kind}-{n}",
                "delivery_id": str(did),
                **extra,
            }
        )

    for did, variant in deliveries.items():
        roll = rng.random()
        if roll < 0.1:
            add(did, "bounce", type=rng.choice(["bounce", "blocked"]), reason="550 5.1.1 unknown user")
            continue
        add(did, "delivered")
        for _ in range(rng.choice([0, 0, 1, 2, 3])):
            add(did, "open", sg_machine_open=False)
        links = [LINKS[code] for code in variant.split(",") if code in LINKS]
        for _ in range(rng.choice([0, 0, 1, 2])):
            if links:
                add(did, "click", url=rng.choice(links))
        if roll > 0.95:
            add(did, "spamreport")
        elif roll > 0.9:
            add(did, "unsubscribe")
            add(did, "click", url=unsubscribe_link)
    return events


def expected_report(events: list[dict[str, Any]], variant_of: dict[int, str]) -> dict[str, Any]:
    """The figures, worked out from the events alone: unique (delivery, metric) pairs."""
    unique = {e["sg_event_id"]: e for e in events}.values()
    reached: dict[str, set[int]] = defaultdict(set)
    clicks: dict[str, int] = defaultdict(int)
    clickers: dict[str, set[int]] = defaultdict(set)
    for e in unique:
        did = int(e["delivery_id"])
        reached[METRIC_OF[e["event"]]].add(did)
        if e["event"] == "click":
            clicks[e["url"]] += 1
            clickers[e["url"]].add(did)

    def figures(ids: set[int]) -> dict[str, Any]:
        counts = {m: len(reached[m] & ids) for m in METRICS}
        d = counts["delivered"]
        rates = {m: (round(counts[m] / d, 4) if d else None) for m in METRICS[1:]}
        return {**counts, "rates": rates}

    by_variant: dict[str, set[int]] = defaultdict(set)
    by_region: dict[str, set[int]] = defaultdict(set)
    for did, variant in variant_of.items():
        if any(did in ids for ids in reached.values()):
            by_variant[variant].add(did)
            for code in variant.split(","):
                by_region[code].add(did)
    return {
        "totals": figures(set(variant_of)),
        "variants": {v: figures(ids) for v, ids in by_variant.items()},
        "regions": {r: figures(ids) for r, ids in by_region.items()},
        "links": {url: (clicks[url], len(clickers[url])) for url in clicks},
    }


def test_report_json_matches_counts_worked_out_from_the_signed_events(
    settings: Settings,
    session: Session,
    make_subscribers: MakeSubscribers,
    make_bulletin: MakeBulletin,
    server: LiveServer,
    signer: Signer,
    cli: Callable[..., Result],
):
    make_subscribers(60, seed=7)
    earlier = sent_bulletin(
        session, make_bulletin, BULLETIN.replace("Links week", "Earlier week"), days_ago=7
    )
    bulletin = sent_bulletin(session, make_bulletin, BULLETIN, days_ago=0)
    rng = random.Random(12)
    variants_of: dict[int, dict[int, str]] = {}
    per_bulletin: dict[int, list[dict[str, Any]]] = {}
    someone = Recipient("x@example.org", "X", 1, link_secret="0" * 32)
    token_link = Links(settings).values(someone, fields={"unsubscribe_url"})["unsubscribe_url"]
    for b in (earlier, bulletin):
        assert b.id is not None
        # Only mail that went out gets events: not the skipped deliveries of people with no section.
        rows = session.exec(
            select(Delivery).where(Delivery.bulletin_id == b.id, Delivery.status != DeliveryStatus.SKIPPED)
        ).all()
        variants_of[b.id] = {int(d.id): d.variant for d in rows if d.id is not None}
        per_bulletin[b.id] = sendgrid_events(rng, variants_of[b.id], token_link)
    session.commit()
    assert earlier.id is not None and bulletin.id is not None

    # Out of order (shuffled), in uneven batches, with a replayed batch and repeated single events.
    events = per_bulletin[earlier.id] + per_bulletin[bulletin.id]
    rng.shuffle(events)
    batches = []
    while events:
        size = rng.randint(1, 40)
        batches.append(events[:size])
        events = events[size:]
    batches.append(batches[1])
    batches.append([batches[0][0], batches[2][0], batches[0][0]])
    for batch in batches:
        post(server, signer, batch)

    report = json.loads(cli("report", str(bulletin.id), "--json").stdout)
    expected = expected_report(per_bulletin[bulletin.id], variants_of[bulletin.id])
    assert report["bulletin"]["id"] == bulletin.id and report["bulletin"]["title"] == "Links week"
    assert report["totals"] == expected["totals"]
    assert {v["variant"]: _figures(v) for v in report["variants"]} == expected["variants"]
    assert {r["region"]: _figures(r) for r in report["regions"]} == expected["regions"]
    assert [r["region"] for r in report["regions"]] == [c for c in REGION_CODES if c in expected["regions"]]
    got_links = {x["url"]: (x["clicks"], x["clickers"]) for x in report["links"]}
    redacted = token_link.rsplit("/", 1)[0] + "/…"
    assert got_links == {(redacted if url == token_link else url): n for url, n in expected["links"].items()}
    for link in report["links"]:
        assert (link["region"], link["item"]) == ITEM_OF.get(link["url"], (None, None))
    assert token_link.rsplit("/", 1)[1] not in json.dumps(report)  # no token, no address, no id of a person
    assert "@" not in json.dumps(report)

    # The trend: both bulletins, oldest first, with the same figures as their own reports.
    earlier_expected = expected_report(per_bulletin[earlier.id], variants_of[earlier.id])
    assert [p["id"] for p in report["trend"]] == [earlier.id, bulletin.id]
    assert _figures(report["trend"][0]) == earlier_expected["totals"]
    assert _figures(report["trend"][1]) == expected["totals"]
    assert report["tracking"] == {"opens": False, "clicks": False}
    assert "estimates" in report["note"] and "Apple Mail Privacy Protection" in report["note"]

    # Recounting from the stored events gives the same report.
    cli("report", "--rebuild")
    assert json.loads(cli("report", str(bulletin.id), "--json").stdout) == report


def _figures(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in (*METRICS, "rates")}


def test_report_of_an_unknown_bulletin_fails_with_one_line(cli: Callable[..., Result]):
    result = cli("report", "9999", code=1)
    assert "no bulletin 9999" in result.output
    assert len(result.output.strip().splitlines()) == 1
