"""`newsletter preview`: what a subscriber of some regions would get, without sending anything."""

from __future__ import annotations

import email
import email.policy
import webbrowser

from typer.testing import CliRunner

from newsletter.cli import app


def test_prints_the_subject_and_text_part_of_the_chosen_regions(preview):
    out = preview("--regions", "africa,HQ & Global Partners").stdout
    assert out.startswith("Subject: IJM Prayer Request\n")
    assert "AFRICA" in out and "HQ & GLOBAL PARTNERS" in out
    assert "LATIN AMERICA" not in out and "Guatemala" not in out
    assert "Dear Sample Supporter," in out
    assert "/unsubscribe/example" in out  # a preview's links never touch a real subscription


def test_writes_html_text_and_a_complete_message(preview, tmp_path):
    html, text, eml = tmp_path / "p.html", tmp_path / "p.txt", tmp_path / "p.eml"
    preview("-r", "latin-america", "--html", str(html), "--text", str(text), "--eml", str(eml))
    assert "Guatemala" in html.read_text("utf-8") and "<!DOCTYPE html>" in html.read_text("utf-8")
    assert "Guatemala" in text.read_text("utf-8") and "Ghana" not in text.read_text("utf-8")
    msg = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert msg.get_content_type() == "multipart/alternative"
    assert msg["To"] == "Sample Supporter <supporter@example.org>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_without_regions_shows_every_region(preview):
    out = preview().stdout
    for heading in ("AFRICA", "LATIN AMERICA", "SOUTH ASIA", "SOUTHEAST ASIA", "HQ & GLOBAL PARTNERS"):
        assert heading in out


def test_a_test_send_preview_has_the_banner(preview):
    out = preview("--test", "-r", "global").stdout
    assert out.startswith("Subject: [TEST] ") and "TEST SEND" in out


def test_open_hands_the_html_to_the_browser(preview, monkeypatch, tmp_path):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    opened: list[str] = []
    monkeypatch.setattr(webbrowser, "open", lambda url, *a, **k: opened.append(url) or True)
    preview("-r", "south-asia", "--open")
    assert len(opened) == 1 and opened[0].startswith("file://") and opened[0].endswith(".html")


def test_unknown_regions_and_bulletins_are_one_line_errors(preview, settings):
    assert "unknown region 'atlantis'" in preview("-r", "atlantis", code=1).output
    result = CliRunner().invoke(app, ["preview", "999"])
    assert result.exit_code == 1 and "no bulletin 999" in result.output
