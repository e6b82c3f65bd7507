"""The fake ESP's HTTP side: the server, the request handler and its control endpoints (`/_fake/...`);
what to answer is decided by the `FakeEsp` the server carries."""

from __future__ import annotations

import gzip
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from newsletter.testing.faults import Fault
from newsletter.testing.sendgrid_rules import _error

if TYPE_CHECKING:
    from newsletter.testing.fake_esp import FakeEsp


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    fake: FakeEsp

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up mid-answer is a normal event for a fault injector: stay quiet.
        pass


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        fake = self.server.fake
        if path == "/v3/mail/send":
            fake._mail_send(self)
        elif path == "/_fake/config":
            fake.configure(**_config_from_json(_read_json(self)))
            self._json(200, fake.config())
        elif path == "/_fake/faults":
            fake.add_fault(Fault(**_read_json(self)))
            self._json(200, fake.config())
        elif path == "/_fake/reset":
            _read_body(self)
            fake.reset()
            self._json(200, fake.config())
        else:
            _read_body(self)
            self._json(404, {"errors": [_error("not found", None)]})

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        fake = self.server.fake
        if url.path == "/v3/scopes":
            fake._scopes(self)
        elif url.path == "/_fake/stats":
            self._json(200, fake.stats())
        elif url.path == "/_fake/config":
            self._json(200, fake.config())
        elif url.path == "/_fake/requests":
            self._json(200, {"requests": [r._asdict() for r in fake.requests()]})
        elif url.path == "/_fake/recipients":
            query = parse_qs(url.query)
            offset = int(query.get("offset", ["0"])[0])
            limit = int(query.get("limit", ["100000000"])[0])
            if fake.record_bodies:
                rows = [r._asdict() for r in fake.accepted()[offset : offset + limit]]
                self._json(200, {"total": fake.stats()["accepted"], "recipients": rows})
            else:
                ids = fake.delivery_ids()[offset : offset + limit]
                self._json(200, {"total": fake.stats()["accepted"], "delivery_ids": ids})
        else:
            self._json(404, {"errors": [_error("not found", None)]})

    def _json(self, status: int, payload: object, headers: dict[str, str] | None = None) -> None:
        self._reply(status, json.dumps(payload).encode(), headers)

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        if body:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.wfile.write(body)


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    length = int(handler.headers.get("Content-Length") or 0)
    data = handler.rfile.read(length) if length else b""
    if handler.headers.get("Content-Encoding", "").lower() == "gzip":
        data = gzip.decompress(data)
    return data


def _read_json(handler: BaseHTTPRequestHandler) -> dict[str, Any]:
    data = _read_body(handler)
    return json.loads(data) if data else {}


def _config_from_json(payload: dict[str, Any]) -> dict[str, Any]:
    kwargs = dict(payload)
    for key in ("faults", "add_faults"):
        if key in kwargs:
            kwargs[key] = [Fault(**f) for f in kwargs[key]]
    return kwargs
