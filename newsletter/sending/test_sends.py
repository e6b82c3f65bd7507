"""Test sends: a bulletin sent to a few staff addresses before the real send, as it will look.

    report = send_test(session, settings, renderer, bulletin_id, to="a@example.org", variant="all")

Each variant goes out with "[TEST] " in the subject and a banner in the body, through the configured
backend, and is recorded as a `TestSend` (one per variant), never as a `Delivery`: a test does not count
towards the bulletin's send, is never retried, and leaves the real recipients' ledger untouched. The admin
and the CLI both call `send_test`; it works in the caller's transaction (the caller commits, so the
`TestSend` rows and the audit entry are kept even when the ESP refused).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sqlmodel import Session

from newsletter.audience.subscribers import normalize_email
from newsletter.content.bulletins import load_content
from newsletter.content.render import Renderer
from newsletter.content.types import BulletinContent, Recipient
from newsletter.core import audit
from newsletter.core.config import Settings
from newsletter.core.errors import NewsletterError
from newsletter.core.models import TestSend
from newsletter.esp import EspError, backend_for
from newsletter.sending.summary import variant_counts

MAX_TEST_RECIPIENTS = 20
ALL_VARIANTS = "all"
"""`variant` value meaning: every variant the bulletin's subscribers would get today."""


@dataclass
class TestSendReport:
    __test__ = False  # not a pytest test class

    addresses: list[str]
    variants: list[str]
    sent: int = 0
    problems: list[str] = field(default_factory=list)


def parse_addresses(text: str) -> list[str]:
    """Addresses separated by commas, semicolons, spaces or lines, without repeats; NewsletterError names
    the first one that is not an address."""
    result: list[str] = []
    for part in re.split(r"[\s,;]+", text):
        if not part:
            continue
        try:
            address = normalize_email(part)
        except ValueError as exc:
            raise NewsletterError(f"{part!r} is not an email address") from exc
        if address not in result:
            result.append(address)
    return result


def variant_names(settings: Settings, key: str) -> str:
    """A variant key (`"africa,global"`) as people read it: "Africa + Global"."""
    names = dict(settings.regions)
    return " + ".join(names.get(code, code) for code in key.split(",") if code)


def variants_to_test(session: Session, content: BulletinContent, which: str) -> list[str]:
    """The variant keys `which` names: every variant subscribers get (`all`), or one region mix
    (codes separated by commas; empty means every region of the bulletin). Mixes with no section are
    dropped."""
    if which == ALL_VARIANTS:
        keys = list(variant_counts(session, content.id)) if content.id else []
        return keys or [",".join(content.region_codes)]
    wanted = set(which.split(",")) if which.strip() else set(content.region_codes)
    key = ",".join(c for c in content.region_codes if c in wanted)
    return [key] if key else []


def _recipients(text: str, fallback: list[str]) -> list[str]:
    addresses = parse_addresses(text) or fallback
    if not addresses:
        raise NewsletterError("no address to send the test to")
    if len(addresses) > MAX_TEST_RECIPIENTS:
        raise NewsletterError(f"a test goes to at most {MAX_TEST_RECIPIENTS} addresses")
    return addresses


def send_test(
    session: Session,
    settings: Settings,
    renderer: Renderer,
    bulletin_id: int,
    *,
    to: str,
    variant: str = "",
    fallback_to: list[str] | None = None,
    user_id: int | None = None,
    actor: str = audit.CLI_ACTOR,
) -> TestSendReport:
    """Send the bulletin's `variant` (see `variants_to_test`) to the addresses in `to` (else `fallback_to`).

    Refused before anything is sent (NewsletterError): a bad or missing address, more than
    `MAX_TEST_RECIPIENTS`, a bulletin without items, a region mix with no section. Refusals by the ESP
    are reported per variant in `problems` and recorded with the `TestSend`.
    """
    addresses = _recipients(to, fallback_to or [])
    content = load_content(session, bulletin_id)
    if not content.sections:
        raise NewsletterError("this bulletin has no items yet")
    keys = variants_to_test(session, content, variant.strip())
    if not keys:
        raise NewsletterError("that region mix has no section in this bulletin")
    report = TestSendReport(addresses=addresses, variants=keys)
    _send(session, settings, renderer, content, report, user_id)
    audit.record(
        session,
        actor,
        "bulletin.test_send",
        "bulletin",
        bulletin_id,
        {"variants": keys, "to": addresses, "failed": report.problems},
    )
    session.flush()
    return report


def _send(
    session: Session,
    settings: Settings,
    renderer: Renderer,
    content: BulletinContent,
    report: TestSendReport,
    user_id: int | None,
) -> None:
    """Send each variant of `report` to its addresses; one `TestSend` per variant."""
    assert content.id is not None
    backend = backend_for(settings)
    try:
        for key in report.variants:
            variant = renderer.variant(content, key, test=True)
            recipients = [
                Recipient(email=a, name="", subscriber_id=None, bulletin_id=content.id)
                for a in report.addresses
            ]
            error = ""
            try:
                results = backend.send(variant, recipients)
            except EspError as exc:
                error = str(exc) or type(exc).__name__
            else:
                refused = [f"{r.recipient.email}: {r.error or 'refused'}" for r in results if not r.accepted]
                report.sent += len(results) - len(refused)
                error = "; ".join(refused)
            if error:
                report.problems.append(f"{variant_names(settings, key)}: {error}")
            session.add(
                TestSend(
                    bulletin_id=content.id,
                    user_id=user_id,
                    variant=key,
                    recipients=", ".join(report.addresses),
                    error=error,
                )
            )
    finally:
        backend.close()
