"""`newsletter send` and `check` never fail silently: misconfiguration is found before anything changes,
exit statuses say how a send ended, failures can be retried, and errors are one line without a traceback."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from newsletter.cli import app
from newsletter.cli import context as cli_context
from newsletter.core.config import Settings
from newsletter.core.status import BulletinStatus, DeliveryStatus
from newsletter.sending.summary import SendSummary, send_summary
from newsletter.testing.fake_esp import FakeEsp, Fault
from tests.db.test_dispatch import deliveries
from tests.factories import MakeBulletin, MakeSubscribers
from tests.fixtures_esp import FAKE_API_KEY

Cli = Callable[..., Result]
D = DeliveryStatus


@pytest.fixture
def via_fake(monkeypatch: pytest.MonkeyPatch, fake_esp: FakeEsp) -> Callable[..., None]:
    """Point the CLI at the fake SendGrid with small retry settings; keyword arguments override."""

    def env(**extra: str) -> None:
        values = {
            "ESP_BACKEND": "sendgrid",
            "SENDGRID_API_KEY": FAKE_API_KEY,
            "SENDGRID_HOST": fake_esp.url,
            "SENDGRID_TIMEOUT": "1",
            "RETRY_BASE_SECONDS": "0.02",
            "RETRY_MAX_SECONDS": "0.05",
            "ESP_OUTAGE_BATCHES": "2",
            "BATCH_SIZE": "10",
            **extra,
        }
        for key, value in values.items():
            monkeypatch.setenv(key, value)
        cli_context.reset()

    env()
    return env


def summary_of(session: object, bulletin_id: int) -> SendSummary:
    """The send summary, read in a transaction of its own (an open one would hold SQLite's write lock)."""
    summary = send_summary(session, bulletin_id)  # type: ignore[arg-type]
    session.commit()  # type: ignore[attr-defined]
    return summary


def accepted_once(fake: FakeEsp, session: object, bulletin_id: int) -> bool:
    sent = Counter(fake.delivery_ids())
    ledger = deliveries(session, bulletin_id)  # type: ignore[arg-type]
    return sorted(sent) == sorted(d.id for d in ledger) and set(sent.values()) == {1}


MISCONFIGURATIONS = [
    ({"SECRET_KEY": "short"}, "SECRET_KEY"),
    ({"SECRET_KEY": "aaaaaaaaaaaaaaaaaaaaaaaa"}, "SECRET_KEY"),
    ({"TEMPLATES_DIR": "/nowhere"}, "TEMPLATES_DIR"),
    ({"SENDGRID_HOST": "http://127.0.0.1:9"}, "SENDGRID_API_KEY/SENDGRID_HOST"),
    ({"SENDGRID_HOST": "127.0.0.1:9"}, "SENDGRID_HOST"),
    ({"SENDGRID_API_KEY": ""}, "SENDGRID_API_KEY"),
    ({"SENDGRID_API_KEY": "SG.wrong"}, "SENDGRID_API_KEY/SENDGRID_HOST"),
    ({"FROM_EMAIL": "bulletin-at-example.org"}, "FROM_EMAIL"),
    ({"ORG_POSTAL_ADDRESS": ""}, "ORG_POSTAL_ADDRESS"),
    ({"BASE_URL": ""}, "BASE_URL"),
    ({"BASE_URL": "http://bulletin.example.org"}, "BASE_URL"),
    ({"ESP_BACKEND": "smtp", "SMTP_HOST": ""}, "SMTP_HOST"),
    ({"ESP_BACKEND": "smtp", "SMTP_HOST": "127.0.0.1", "SMTP_PORT": "9"}, "SMTP_HOST"),
]


def test_misconfiguration_is_found_before_anything_changes(
    cli: Cli,
    session: object,
    make_subscribers: MakeSubscribers,
    make_bulletin: MakeBulletin,
    fake_esp: FakeEsp,
    via_fake: Callable[..., None],
) -> None:
    make_subscribers(12)
    bulletin = make_bulletin()
    assert bulletin.id is not None
    for bad, setting in MISCONFIGURATIONS:
        with pytest.MonkeyPatch.context() as mp:
            for key, value in bad.items():
                mp.setenv(key, value)
            cli_context.reset()
            out = cli("send", str(bulletin.id), code=1).output
            assert "preflight failed, nothing was changed" in out, (bad, out)
            assert "Traceback" not in out and len(out.strip().splitlines()) == 1, out
            assert setting in cli("check", code=1).output, bad  # check lists every problem
        cli_context.reset()
    summary = summary_of(session, bulletin.id)
    assert summary.status == BulletinStatus.READY and summary.total == 0, "nothing planned, nothing failed"
    assert not [r for r in fake_esp.requests() if r.outcome == "202"], "nobody was mailed"

    via_fake()
    assert "configuration ok" in cli("check").output
    cli("send", str(bulletin.id))
    assert accepted_once(fake_esp, session, bulletin.id)


def test_send_exits_2_when_the_esp_goes_down_and_resumes_after(
    cli: Cli,
    session: object,
    make_subscribers: MakeSubscribers,
    make_bulletin: MakeBulletin,
    fake_esp: FakeEsp,
    via_fake: Callable[..., None],
) -> None:
    make_subscribers(30)
    bulletin = make_bulletin()
    # The preflight's sandbox request passes; every request after it gets 503.
    fake_esp.configure(faults=[Fault("slow", delay=0.0, count=1), Fault("status", status=503)])
    out = cli("send", str(bulletin.id), code=2).output
    assert f"newsletter send {bulletin.id}" in out and "ESP unavailable since" in out
    summary = summary_of(session, bulletin.id)
    assert summary.status == BulletinStatus.PAUSED and summary.counts == {D.PENDING: 30}

    fake_esp.clear_faults()
    cli("send", str(bulletin.id))
    assert accepted_once(fake_esp, session, bulletin.id)


def test_send_exits_3_with_failures_and_retry_failed_never_requeues_a_refused_address(
    cli: Cli,
    session: object,
    make_subscribers: MakeSubscribers,
    make_bulletin: MakeBulletin,
    fake_esp: FakeEsp,
    via_fake: Callable[..., None],
) -> None:
    make_subscribers(20)
    bulletin = make_bulletin()
    via_fake(RESEND_ON_UNKNOWN="false", SEND_CONCURRENCY="1")
    fake_esp.reject_addresses(r"^user3@")
    fake_esp.configure(faults=[Fault("slow", delay=0.0, count=1), Fault("drop_after_accept", count=1)])
    out = cli("send", str(bulletin.id), code=3).output
    assert f"newsletter send {bulletin.id} --retry-failed" in out
    failed = [d for d in deliveries(session, bulletin.id) if d.status == D.FAILED]  # type: ignore[arg-type]
    unknown = {d.id for d in failed if not d.refused}
    assert unknown and len(failed) == len(unknown) + 1, "one refused address, one batch of unknown outcome"

    fake_esp.clear_faults()
    fake_esp.reject_addresses(r"^user3@")
    cli("send", str(bulletin.id), "--retry-failed", code=3)  # the refused address still fails
    ledger = deliveries(session, bulletin.id)  # type: ignore[arg-type]
    assert [d.status for d in ledger if d.refused] == [D.FAILED]
    assert {d.status for d in ledger if d.id in unknown} == {D.ACCEPTED}
    assert Counter(fake_esp.delivery_ids())[next(iter(unknown))] == 2, "retrying an unknown outcome resends"


def test_a_draft_needs_yes_and_is_refused_without_a_terminal(
    cli: Cli, session: object, make_subscribers: MakeSubscribers, make_bulletin: MakeBulletin
) -> None:
    make_subscribers(3)
    draft = make_bulletin(status=BulletinStatus.DRAFT)
    out = cli("send", str(draft.id), code=1).output
    assert "is a draft" in out and "--yes" in out
    assert summary_of(session, draft.id).status == BulletinStatus.DRAFT  # type: ignore[arg-type]
    cli("send", str(draft.id), "--yes")


ONE_LINE_ERRORS = [
    ({"DATABASE_URL": "nosuchdriver://x/y"}, "DATABASE_URL"),
    ({"DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none"}, "DATABASE_URL"),
    ({"BATCH_SIZE": "5000"}, "BATCH_SIZE"),
    ({"ESP_BACKEND": "mailgun"}, "ESP_BACKEND"),
]


@pytest.mark.parametrize(("env", "named"), ONE_LINE_ERRORS, ids=lambda v: str(v)[:30])
def test_bad_settings_are_one_line_without_a_traceback(
    basic_settings: Settings, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cli_context.reset()
    result = CliRunner().invoke(app, ["status", "1"])
    assert result.exit_code == 1 and named in result.output, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_an_uninitialised_database_says_run_init_and_is_not_created(
    basic_settings: Settings, tmp_path: Path
) -> None:
    database = Path(basic_settings.DATABASE_URL.removeprefix("sqlite:///"))
    for args in (["status", "1"], ["send", "1"], ["check"], ["bulletins", "list"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 1 and "run `newsletter init`" in result.output, (args, result.output)
    assert not database.exists(), "nothing but init and demo creates a database"
    assert CliRunner().invoke(app, ["init"]).exit_code == 0 and database.exists()


def test_a_read_only_database_fails_the_check_in_one_line(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not settings.is_sqlite:
        pytest.skip("a read-only file is SQLite's case")
    path = settings.DATABASE_URL.removeprefix("sqlite:///")
    sqlite3.connect(path).close()
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///file:{path}?mode=ro&uri=true")
    cli_context.reset()
    result = CliRunner().invoke(app, ["check", "--no-esp"])
    assert result.exit_code == 1 and "DATABASE_URL" in result.output and "readonly" in result.output, (
        result.output
    )
    assert "Traceback" not in result.output


def test_worker_until_idle_exits_2_naming_a_bulletin_it_paused_for_refused_credentials(
    cli: Cli,
    session: object,
    make_subscribers: MakeSubscribers,
    planned_bulletin: MakeBulletin,
    fake_esp: FakeEsp,
    via_fake: Callable[..., None],
) -> None:
    """Not an outage, so no worker will resume it by itself: the run did not get its job done."""
    make_subscribers(12)
    bulletin = planned_bulletin()
    assert bulletin.id is not None
    via_fake(SENDGRID_API_KEY="SG.revoked-since-the-send-began")
    out = cli("worker", "--until-idle", code=2).output
    assert f"bulletin {bulletin.id} is paused, not finished" in out and "refused our credentials" in out
    summary = summary_of(session, bulletin.id)
    assert summary.status == BulletinStatus.PAUSED and summary.counts == {D.PENDING: 12}


def test_a_person_s_earlier_pause_is_not_the_worker_s_failure(
    cli: Cli,
    session: object,
    make_subscribers: MakeSubscribers,
    planned_bulletin: MakeBulletin,
    via_fake: Callable[..., None],
) -> None:
    make_subscribers(3)
    bulletin = planned_bulletin()
    cli("bulletins", "pause", str(bulletin.id))
    assert "paused, not finished" not in cli("worker", "--until-idle").output


def test_send_retry_failed_does_not_offer_itself_when_the_esp_refused_every_address(
    cli: Cli,
    session: object,
    make_subscribers: MakeSubscribers,
    make_bulletin: MakeBulletin,
    fake_esp: FakeEsp,
    via_fake: Callable[..., None],
) -> None:
    make_subscribers(12)
    bulletin = make_bulletin()
    fake_esp.reject_addresses(r"^user3@")
    last = cli("send", str(bulletin.id), code=3).output.strip().splitlines()[-1]
    assert "the ESP refused their addresses" in last and "--retry-failed" not in last
    again = cli("send", str(bulletin.id), "--retry-failed", code=3).output.strip().splitlines()[-1]
    assert "the ESP refused their addresses" in again and "--retry-failed" not in again
    assert Counter(fake_esp.delivery_ids()) == Counter(
        d.id
        for d in deliveries(session, bulletin.id)  # type: ignore[arg-type]
        if d.status == D.ACCEPTED
    ), "the refused address was not tried again, nobody got two"
