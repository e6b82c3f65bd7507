"""The CLI contract of the foundation: init, regions, subscribers and bulletins."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from newsletter.cli import app

SAMPLE = Path(__file__).parents[1] / "data" / "prayer-bulletin.txt"


def test_init_is_idempotent(cli):
    first = cli("init")
    again = cli("init")
    assert "up to date" in first.output and "0 regions added" in again.output
    regions = cli("regions", "list").output
    assert "latin-america" in regions and "HQ & Global Partners" in regions


def test_import_the_sample_and_show_it_as_json(cli):
    assert "bulletin 1 imported" in cli("bulletins", "import", str(SAMPLE)).output
    data = json.loads(cli("bulletins", "show", "1", "--json").stdout)
    assert set(data) >= {"id", "title", "subject", "status", "send_at", "scripture", "sections"}
    assert data["scripture"]["reference"] == "Proverbs 21:15"
    assert data["scripture"]["text"].startswith("When justice is done")
    assert [(s["region"], len(s["items"])) for s in data["sections"]] == [
        ("africa", 1),
        ("latin-america", 1),
        ("south-asia", 1),
        ("southeast-asia", 1),
        ("global", 2),
    ]
    text = SAMPLE.read_text("utf-8")
    assert all(item["body"] in text for s in data["sections"] for item in s["items"])
    assert data["status"] == "draft" and data["send_at"] is None


def test_import_ready_with_a_send_time_in_the_local_zone(cli):
    cli("bulletins", "import", str(SAMPLE), "--ready", "--send-at", "2026-06-01T07:00")
    data = json.loads(cli("bulletins", "show", "1", "--json").stdout)
    assert data["status"] == "ready"
    assert data["send_at"].startswith("2026-06-01T06:00")  # 07:00 in London in summer is 06:00 UTC
    assert "IJM Prayer Request" in cli("bulletins", "list").output


def test_an_unreadable_bulletin_stores_nothing(cli, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("Title\n\nAfrica\n\nAn item.\n\nAtlantis Office\n\nAnother.\n", "utf-8")
    result = cli("bulletins", "import", str(bad), code=1)
    assert "line 7" in result.output and "Atlantis Office" in result.output
    assert "Traceback" not in result.output
    assert "Bulletin" not in cli("bulletins", "list").output.replace("title", "")


def test_subscriber_import_reports_bad_rows_and_exits_non_zero(cli, tmp_path):
    csv = tmp_path / "list.csv"
    csv.write_bytes(b"\xef\xbb\xbfemail,name,regions\r\na@example.org,A,africa\r\nbad,B,africa\r\n")
    result = cli("subscribers", "import", str(csv), code=1)
    assert "list.csv:3: invalid email 'bad'" in result.output
    assert "1 new" in result.output
    listed = cli("subscribers", "list", "--region", "Africa").output
    assert "a@example.org" in listed and "1 of 1" in listed


def test_dry_run_stores_nothing(cli, tmp_path):
    csv = tmp_path / "list.csv"
    csv.write_text("email,name,regions\na@example.org,A,africa\n", "utf-8")
    assert "dry run: 1 new" in cli("subscribers", "import", str(csv), "--dry-run").output
    assert "0 of 0" in cli("subscribers", "list").output


def test_user_mistakes_are_one_line_without_traceback(settings):
    for args in (["bulletins", "show", "42"], ["subscribers", "list", "--region", "Mars"]):
        proc = subprocess.run(
            [sys.executable, "-m", "newsletter", *args], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 1
        assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error:"), proc.stderr
        assert "Traceback" not in proc.stderr


def test_every_command_has_help(cli):
    import typer.main

    group = typer.main.get_command(app)
    stack = [((), group)]
    while stack:
        path, command = stack.pop()
        result = cli(*path, "--help")
        assert "Usage" in result.output and "--help" in result.output
        for name, sub in getattr(command, "commands", {}).items():
            assert sub.help or sub.short_help or sub.callback.__doc__, f"{(*path, name)} has no help text"
            stack.append(((*path, name), sub))
