"""`newsletter web --port N`: links follow the port actually served unless BASE_URL says otherwise."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from newsletter.core.config import get_settings, served_base_url


def test_an_unset_base_url_is_derived_from_the_address_served(basic_settings, monkeypatch):
    monkeypatch.delenv("BASE_URL")
    settings, note = served_base_url(get_settings(), "127.0.0.1", 8123)
    assert settings.BASE_URL == "http://127.0.0.1:8123"
    assert note == "BASE_URL is not set: links in emails and pages use http://127.0.0.1:8123"
    assert served_base_url(get_settings(), "0.0.0.0", 9000)[0].BASE_URL == "http://127.0.0.1:9000"
    assert served_base_url(get_settings(), "::1", 9000)[0].BASE_URL == "http://[::1]:9000"


def test_a_set_base_url_is_kept_with_a_warning_when_it_differs(basic_settings, monkeypatch):
    monkeypatch.setenv("BASE_URL", "https://pray.example.org")
    settings, note = served_base_url(get_settings(), "127.0.0.1", 8123)
    assert settings.BASE_URL == "https://pray.example.org"
    assert note.startswith("warning: BASE_URL is https://pray.example.org but this server listens on")
    monkeypatch.setenv("BASE_URL", "http://127.0.0.1:8123/")
    assert not served_base_url(get_settings(), "127.0.0.1", 8123)[1].startswith("warning")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_the_subscribe_form_posts_to_the_port_served(settings, monkeypatch):
    monkeypatch.delenv("BASE_URL")
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "web", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    try:
        first_line = server.stderr.readline() if server.stderr else ""
        assert (
            first_line.strip()
            == f"BASE_URL is not set: links in emails and pages use http://127.0.0.1:{port}"
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/subscribe", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the web app did not start"
                time.sleep(0.2)
        assert f'action="http://127.0.0.1:{port}/subscribe"' in page.text
    finally:
        server.terminate()
        server.communicate(timeout=10)
