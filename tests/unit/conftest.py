"""Unit tests: pure code (parsing, rendering, tokens, messages, settings) with no database and no network.

`pytest tests/unit` runs in seconds with nothing started. Two guards keep it that way: asking for a
database fixture fails, and so does opening a network connection.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest


@pytest.fixture
def db_url() -> str:
    pytest.fail("unit tests use no database: move this test to tests/db")


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: socket.socket, address: Any) -> None:
        raise AssertionError(f"unit tests use no network (tried to connect to {address!r})")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
