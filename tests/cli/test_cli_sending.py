"""The sending commands: send, status, schedule/pause/resume/cancel, worker, demo."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from sqlmodel import Session
from typer.testing import Result

from newsletter.core.config import Settings
from newsletter.core.models import Bulletin
from newsletter.core.status import BulletinStatus
from tests.factories import MakeBulletin

Cli = Callable[..., Result]


def status_of(session: Session, bulletin_id: int) -> str:
    bulletin = session.get(Bulletin, bulletin_id, populate_existing=True)
    session.commit()
    assert bulletin is not None
    return bulletin.status


def test_send_sends_now_and_status_reports_it_as_json(
    cli: Cli, settings: Settings, make_subscribers: Callable[..., int], make_bulletin: MakeBulletin
) -> None:
    make_subscribers(40)
    bulletin = make_bulletin(status=BulletinStatus.DRAFT)
    out = cli("send", str(bulletin.id), "--yes").output
    assert "sent" in out and "accepted" in out and "40" in out
    data = json.loads(cli("status", str(bulletin.id), "--json").stdout)
    assert data["status"] == "sent" and data["counts"] == {"accepted": 40}
    assert data["total"] == data["sent"] == 40 and data["open"] == 0
    assert data["rate_per_second"] > 0 and data["duration_seconds"] is not None
    assert sum(data["variants"].values()) == 40 and data["errors"] == []
    assert len(list((Path(settings.OUTBOX_DIR) / f"bulletin-{bulletin.id}").glob("*.eml"))) == 40
    assert "accepted" in cli("status", str(bulletin.id)).output

    again = cli("send", str(bulletin.id), code=1)
    assert "cannot go from sent to sending" in again.output


def test_schedule_pause_resume_cancel(
    cli: Cli, session: Session, make_subscribers: Callable[..., int], make_bulletin: MakeBulletin
) -> None:
    make_subscribers(3)
    bulletin = make_bulletin(status=BulletinStatus.DRAFT)
    bid = str(bulletin.id)
    assert "will be sent" in cli("bulletins", "schedule", bid, "--at", "2030-01-07T07:00").output
    assert status_of(session, bulletin.id) == BulletinStatus.READY  # type: ignore[arg-type]
    # A time that has passed would send it at once: refused, and the time it had stays.
    past = cli("bulletins", "schedule", bid, "--at", "2020-01-06T07:00", code=1)
    assert "that time has passed" in past.output
    session.expire_all()
    kept = session.get(Bulletin, bulletin.id)
    assert kept is not None and kept.send_at is not None and kept.send_at.year == 2030
    session.commit()
    cli("bulletins", "pause", bid)
    assert status_of(session, bulletin.id) == BulletinStatus.PAUSED  # type: ignore[arg-type]
    assert "ready again" in cli("bulletins", "resume", bid).output
    cli("bulletins", "pause", bid)
    assert "cancelled" in cli("bulletins", "cancel", bid).output
    assert status_of(session, bulletin.id) == BulletinStatus.CANCELLED  # type: ignore[arg-type]
    assert "is cancelled, not paused" in cli("bulletins", "resume", bid, code=1).output
    assert "not an ISO-8601 time" in cli("bulletins", "schedule", bid, "--at", "next monday", code=1).output


def test_worker_until_idle_sends_due_bulletins_in_a_process_of_its_own(
    settings: Settings, session: Session, make_subscribers: Callable[..., int], make_bulletin: MakeBulletin
) -> None:
    from newsletter.core.models import utcnow

    make_subscribers(25)
    bulletin = make_bulletin(send_at=utcnow())
    done = subprocess.run(
        [sys.executable, "-m", "newsletter", "worker", "--until-idle"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert status_of(session, bulletin.id) == BulletinStatus.SENT  # type: ignore[arg-type]
    assert f"bulletin {bulletin.id}" in done.stderr and "25 accepted" in done.stderr


def test_demo_sends_the_sample_bulletin_to_the_sample_subscribers(cli: Cli, tmp_path: Path) -> None:
    out = cli("demo", "--dir", str(tmp_path / "demo")).output
    assert "300 subscribers imported" in out
    assert "sent:" in out and "accepted" in out
    files = list((tmp_path / "demo" / "outbox" / "bulletin-1").glob("*.eml"))
    assert len(files) > 200 and f"{len(files)} messages in" in out
    # Run it again: a fresh database and outbox, the same result.
    again = cli("demo", "--dir", str(tmp_path / "demo")).output
    assert f"{len(files)} messages in" in again


def test_run_serves_the_web_app_and_sends_due_bulletins_in_one_process(
    settings: Settings, session: Session, make_subscribers: Callable[..., int], make_bulletin: MakeBulletin
) -> None:
    import contextlib
    import os
    import signal
    import socket
    import time

    import httpx

    from newsletter.core.models import utcnow

    make_subscribers(15)
    bulletin = make_bulletin(send_at=utcnow())
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "SCHEDULER_TICK_SECONDS": "0.5"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "run", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        served = sent = False
        while time.monotonic() < deadline and not (served and sent):
            with contextlib.suppress(httpx.TransportError):
                served = httpx.get(f"http://127.0.0.1:{port}/subscribe", timeout=2).status_code == 200
            sent = status_of(session, bulletin.id) == BulletinStatus.SENT  # type: ignore[arg-type]
            time.sleep(0.3)
        assert served, "the web app never answered"
        assert sent, "the scheduler never sent the due bulletin"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert f"bulletin {bulletin.id}" in stderr
    assert "scheduler stopped" in stderr  # the scheduler thread was stopped, not killed


def test_schedule_local_then_worker_until_idle_sends_the_zones_that_have_come(
    cli: Cli, settings: Settings, session: Session, make_bulletin: MakeBulletin, tmp_path: Path
) -> None:
    from datetime import UTC, datetime, timedelta

    from newsletter.core import zones

    people = tmp_path / "people.csv"
    people.write_text(
        "email,name,regions,timezone\n"
        "m@example.org,M,africa,Asia/Manila\nk@example.org,K,africa,Pacific/Kiritimati\n"
        "g@example.org,G,africa,America/Guatemala\nx@example.org,X,africa,Etc/GMT+12\n",
        "utf-8",
    )
    cli("subscribers", "import", str(people))
    bulletin = make_bulletin(status=BulletinStatus.DRAFT)
    # Three hours ahead on UTC's clock: come in Manila and Kiritimati, not yet in Guatemala or at GMT+12.
    wall = (datetime.now(UTC) + timedelta(hours=3)).replace(tzinfo=None, second=0, microsecond=0)
    at = zones.format_wall(wall)
    out = cli("bulletins", "schedule", str(bulletin.id), "--at", at, "--local").output
    assert "their time" in out and "the first zone" in out
    refused = cli(
        "bulletins", "schedule", str(bulletin.id), "--at", "2026-11-30T07:00+02:00", "--local", code=1
    )
    assert "has a UTC offset" in refused.output

    done = cli("worker", "--until-idle").output
    next_due = zones.due_at(wall, "America/Guatemala").astimezone(settings.tz).strftime("%Y-%m-%d %H:%M")
    assert f"the next delivery falls due {next_due}" in done
    data = json.loads(cli("status", str(bulletin.id), "--json").stdout)
    assert data["status"] == "sending" and data["local_send_at"] == at
    by_zone = {z["timezone"]: z for z in data["zones"]}
    assert [z["timezone"] for z in data["zones"]] == [
        "Pacific/Kiritimati",
        "Asia/Manila",
        "America/Guatemala",
        "Etc/GMT+12",
    ]
    assert by_zone["Asia/Manila"]["due_at"] == zones.due_at(wall, "Asia/Manila").isoformat()
    assert (by_zone["Asia/Manila"]["sent"], by_zone["Etc/GMT+12"]["pending"]) == (1, 1)
