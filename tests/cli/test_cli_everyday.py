"""The CLI in everyday use: `-` is standard output, messages read as English, help is tidy."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

import pytest

from tests.factories import csv_for


@pytest.mark.parametrize("option", ["--text", "--html", "--eml"])
def test_dash_means_standard_output_for_every_preview_output(preview, tmp_path, option):
    result = preview(option, "-", "--regions", "africa")
    assert not Path("-").exists() and not (tmp_path / "-").exists()
    out = result.stdout
    if option == "--text":
        assert "Dear Sample Supporter," in out and "Subject:" not in out
    elif option == "--html":
        assert out.startswith("<!DOCTYPE html>") and "Sample Supporter" in out
    else:
        message = email.message_from_bytes(result.stdout_bytes, policy=email.policy.default)
        assert message["Subject"] == "IJM Prayer Request"
    assert "to standard output" in result.stderr


def test_two_outputs_cannot_both_be_standard_output(preview):
    result = preview("--text", "-", "--html", "-", code=1)
    assert result.stderr.strip() == "error: only one output can be '-' (standard output)"


def test_dash_means_standard_output_for_the_export(cli, tmp_path):
    (tmp_path / "people.csv").write_text(csv_for([("ada@example.org", "Ada", ["africa"], "active")]))
    cli("subscribers", "import", str(tmp_path / "people.csv"))
    result = cli("subscribers", "export", "-")
    assert result.stdout.splitlines() == [
        "email,name,regions,status,timezone",
        "ada@example.org,Ada,africa,active,",
    ]
    assert not (tmp_path / "-").exists()


def test_one_row_is_one_row(cli, tmp_path):
    (tmp_path / "one.csv").write_text(csv_for([("ada@example.org", "Ada", ["africa"], "active")]))
    assert "(1 row was stored)" in cli("subscribers", "import", str(tmp_path / "one.csv")).stdout
    assert (
        "(1 row would be stored)"
        in cli("subscribers", "import", "--dry-run", str(tmp_path / "one.csv")).stdout
    )
    (tmp_path / "two.csv").write_text(
        csv_for(
            [("bo@example.org", "Bo", ["africa"], "active"), ("cy@example.org", "Cy", ["africa"], "active")]
        )
    )
    assert "(2 rows were stored)" in cli("subscribers", "import", str(tmp_path / "two.csv")).stdout


def test_a_wrong_choice_is_named_plainly(cli):
    result = cli("users", "add", "x@example.org", "--role", "admin", code=2)
    assert "Invalid value for '--role': 'admin' is not one of 'staff', 'volunteer'" in result.output
    assert "Value error" not in result.output


def test_a_bad_setting_is_one_line_without_a_traceback(cli, monkeypatch):
    monkeypatch.setenv("TIMEZONE", "Mars/Olympus")
    result = cli("regions", "list", code=1)
    assert result.stderr == "error: bad setting: TIMEZONE: unknown time zone 'Mars/Olympus'\n"


def test_help_shows_no_bool_types_and_reflows_paragraphs(cli):
    for args in (["run"], ["send"], ["preview"], ["users", "add"], ["worker"]):
        text = cli(*args, "--help").output
        assert "<bool>" not in text, args
    lines = cli("run", "--help").output.splitlines()
    # paragraphs are re-flowed to the terminal (80 columns here), not broken where the source is
    assert "  Run the whole service in one process until Ctrl-C: the scheduler (weekly slot," in lines
    assert "  --web / --no-web  Serve the web app beside the scheduler.  [default: web]" in lines


def test_a_bulk_send_without_a_postal_address_is_refused(cli, monkeypatch, make_bulletin, session):
    monkeypatch.setenv("ORG_POSTAL_ADDRESS", "")
    bulletin = make_bulletin()
    session.commit()
    result = cli("send", str(bulletin.id), code=1)
    assert "preflight failed, nothing was changed: ORG_POSTAL_ADDRESS" in result.stderr


def test_export_into_a_pipe_closed_early_stops_quietly(settings, make_subscribers):
    # Like `newsletter subscribers export | head -2`: far more CSV than a pipe holds, the reader leaves.
    import subprocess
    import sys

    make_subscribers(3000)
    with subprocess.Popen(
        [sys.executable, "-m", "newsletter", "subscribers", "export"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline() == b"email,name,regions,status,timezone\n"
        assert proc.stdout.readline().startswith(b"user0@example.org,User 0,")
        proc.stdout.close()
        error = proc.stderr.read().decode()
        assert proc.wait(timeout=60) == 0, error
    assert error == ""


def test_export_to_a_file_shows_progress_on_stderr(cli, make_subscribers, tmp_path, monkeypatch):
    import io

    from rich.console import Console
    from rich.progress import MofNCompleteColumn, Progress, TextColumn

    from newsletter.cli import context

    shown = io.StringIO()

    def progress(transient: bool = False) -> Progress:
        console = Console(file=shown, force_terminal=True, width=200)
        return Progress(TextColumn("{task.description}"), MofNCompleteColumn(), console=console)

    monkeypatch.setattr(context, "progress", progress)
    make_subscribers(3)
    cli("subscribers", "export", "-")
    assert shown.getvalue() == ""  # standard output is the CSV itself: no bar
    assert "3 subscribers written" in cli("subscribers", "export", str(tmp_path / "out.csv")).stdout
    assert "exporting to" in shown.getvalue() and "3/3" in shown.getvalue()
