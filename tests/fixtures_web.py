"""The web app on a real uvicorn, on loopback, for tests that talk HTTP to it.

    live_server     a started `LiveServer` for the test's `settings` (127.0.0.1, a free port):
                    `.url`, `.client` (an httpx.Client with that base URL, no redirects followed),
                    `.app` (the FastAPI app, e.g. to reach `app.state`).
    start_live_server(settings)   the same, as a context manager, for other settings (e.g. another BASE_URL)

`settings.BASE_URL` is not changed: links in emails point at BASE_URL, and tests open them by
replacing that prefix with `live_server.url` (`live_server.local(url)`).

Registered in tests/conftest.py with `pytest_plugins = ["tests.fixtures_web"]`.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from newsletter.core.config import Settings
from newsletter.web.app import create_app


class LiveServer:
    def __init__(self, app: FastAPI, sock: socket.socket, base_url: str) -> None:
        self.app = app
        host, port = sock.getsockname()[:2]
        self.url = f"http://{host}:{port}"
        self.base_url = base_url.rstrip("/")
        self.client = httpx.Client(base_url=self.url, follow_redirects=False, timeout=30.0)

    def local(self, url: str) -> str:
        """A link from an email (under BASE_URL) as a URL on this server."""
        if url.startswith(self.base_url):
            return self.url + url[len(self.base_url) :]
        return url

    def route_base_url(self, context: Any) -> None:
        """Make a Playwright browser context send requests for BASE_URL (where forms post, like the
        embeddable subscription form) to this server."""
        context.route(f"{self.base_url}/**", lambda route: route.continue_(url=self.local(route.request.url)))


@contextmanager
def start_live_server(settings: Settings) -> Iterator[LiveServer]:
    app = create_app(settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", lifespan="off", ws="none", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    live = LiveServer(app, sock, settings.BASE_URL)
    try:
        yield live
    finally:
        live.client.close()
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        app.state.engine.dispose()


@pytest.fixture
def live_server(settings: Settings) -> Iterator[LiveServer]:
    with start_live_server(settings) as live:
        yield live
