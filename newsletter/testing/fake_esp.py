"""A fake SendGrid: `POST /v3/mail/send` on loopback, strict about bodies, told how to fail.

Every body is checked against the rules of the Mail Send OpenAPI schema SendGrid publishes (v3
`POST /mail/send`) and the limits its documentation adds (`sendgrid_rules.validate_mail_send`). A
violation answers 400 with SendGrid's error shape `{"errors": [{"message", "field", "help"}]}`; a body
with `mail_settings.sandbox_mode.enable` true answers 200 and is not recorded (SendGrid's sandbox mode:
validated, never delivered); otherwise 202 with an `X-Message-Id`, and every recipient is recorded.
`GET /v3/scopes` is an authenticated read.

Faults, each at a probability (one seeded draw per request, the rates of the faults add up), for the
next N requests, or for the next N seconds:
    status          answer 400/401/403/429/500/503/... (429 carries X-RateLimit-Limit/Remaining/Reset)
    slow            wait `delay` seconds, then answer normally, unless the client hung up meanwhile
                    (a timed-out request is then *not* accepted)
    drop            close the connection without answering; nothing is accepted
    drop_after_accept   accept and record the batch, then close without answering (an unknown outcome)
    hang_after_accept   accept and record the batch, then answer nothing until the client gives up
and `reject_pattern`: any batch with an address matching this regex gets a 400 naming that address, so
the dispatcher's split-on-400 can find it; `max_body_bytes`: a body over this many bytes gets a 413, as
SendGrid answers one over its limit (the default, `sendgrid_rules.MAX_BODY_BYTES`), so a test can make
a bulletin too large for a batch of many, or for any request, without sending 30 MB. In this process, `refuse_connections()` stops listening (every
connection refused) until `accept_connections()`.

In a test:
    fake = FakeEsp(api_key="SG.test").start()       # or the `fake_esp` fixture of tests/fixtures_esp.py
    fake.fail(503, rate=0.2); fake.drop(count=1); fake.reject_addresses(r"@invalid\\.test$")
    ...; fake.accepted(); fake.stats(); fake.stop()
As a process (benchmarks, crash tests):
    python -m newsletter.testing.fake_esp --port 0 --port-file F [--no-record-bodies] [--api-key K]
and control it over HTTP (`RemoteFakeEsp`, or `spawn_fake_esp()` which does both):
    POST /_fake/config {"faults": [{"action": "status", "status": 500, "rate": 0.1}], "reject_pattern": ...}
    POST /_fake/faults {"action": "drop", "count": 2}      (adds one)
    POST /_fake/reset      GET /_fake/stats      GET /_fake/recipients?offset=0&limit=1000
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import select
import signal
import socket
import threading
import time
import uuid
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from newsletter.testing.fake_esp_http import _Handler, _read_body, _Server
from newsletter.testing.fake_esp_remote import RemoteFakeEsp, spawn_fake_esp
from newsletter.testing.faults import Fault, FaultAction, FaultControls
from newsletter.testing.sendgrid_rules import MAX_BODY_BYTES, _error, validate_mail_send

__all__ = ["FakeEsp", "Fault", "FaultAction", "RemoteFakeEsp", "spawn_fake_esp", "validate_mail_send"]


class AcceptedRecipient(NamedTuple):
    email: str
    name: str | None
    delivery_id: str | None
    bulletin_id: str | None
    custom_args: dict[str, Any]
    substitutions: dict[str, Any]
    headers: dict[str, Any]
    subject: str
    request_id: int
    message_id: str


class RequestRecord(NamedTuple):
    request_id: int
    outcome: str
    """The status code answered ("202", "400"...), "dropped" or "abandoned" (slow, client hung up)."""
    personalizations: int
    message_id: str
    size: int = 0
    """The body's length in bytes."""


@dataclass
class _State:
    faults: list[list[Any]] = field(default_factory=list)  # [Fault, remaining count or None, until or None]
    reject: re.Pattern[str] | None = None
    latency: float = 0.0
    rate_limit_reset: float = 1.0
    seed: int = 0
    max_body_bytes: int = MAX_BODY_BYTES


def _entry(fault: Fault) -> list[Any]:
    """A fault as the state keeps it: [fault, remaining count, monotonic deadline]."""
    until = time.monotonic() + fault.seconds if fault.seconds is not None else None
    return [fault, fault.count, until]


def _client_gone(sock: socket.socket) -> bool:
    """True when the peer has closed its end (a timed-out client), seen without consuming any input."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


class FakeEsp(FaultControls):
    """The fake, in this process: `start()` binds 127.0.0.1 (port 0 = any free one) and serves in threads.

    `api_key`, when set, is the only Bearer token accepted (else any non-empty one). `record_bodies=False`
    keeps only delivery ids (8 bytes each), for runs of a million recipients.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        api_key: str | None = None,
        record_bodies: bool = True,
        seed: int = 0,
    ) -> None:
        self.host = host
        self.port = port
        self.api_key = api_key
        self.record_bodies = record_bodies
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._state = _State(seed=seed)
        self._rng = random.Random(seed)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._clear_records()

    # --- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> FakeEsp:
        server = _Server((self.host, self.port), _Handler)
        server.fake = self
        self._server = server
        self.port = server.server_address[1]
        self._stopping.clear()
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-esp", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeEsp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The value for `SENDGRID_HOST`."""
        return f"http://{self.host}:{self.port}"

    # --- control -----------------------------------------------------------------------------------
    def configure(
        self,
        *,
        faults: Sequence[Fault] | None = None,
        add_faults: Sequence[Fault] = (),
        reject_pattern: str | None = None,
        latency: float | None = None,
        rate_limit_reset: float | None = None,
        seed: int | None = None,
        api_key: str | None = None,
        max_body_bytes: int | None = None,
    ) -> None:
        """Change what is given; `faults` replaces the list, `add_faults` appends, `reject_pattern=""` clears."""
        with self._lock:
            state = self._state
            if faults is not None:
                state.faults = [_entry(f) for f in faults]
            state.faults.extend(_entry(f) for f in add_faults)
            if reject_pattern is not None:
                state.reject = re.compile(reject_pattern) if reject_pattern else None
            if latency is not None:
                state.latency = latency
            if rate_limit_reset is not None:
                state.rate_limit_reset = rate_limit_reset
            if seed is not None:
                state.seed = seed
                self._rng = random.Random(seed)
            if api_key is not None:
                self.api_key = api_key or None
            if max_body_bytes is not None:
                state.max_body_bytes = max_body_bytes

    def add_fault(self, fault: Fault) -> None:
        self.configure(add_faults=[fault])

    def _configure(self, changes: dict[str, Any]) -> None:
        self.configure(**changes)

    def config(self) -> dict[str, Any]:
        with self._lock:
            state = self._state
            return {
                "faults": [dict(asdict(f), remaining=n) for f, n, _ in state.faults],
                "reject_pattern": state.reject.pattern if state.reject else "",
                "latency": state.latency,
                "rate_limit_reset": state.rate_limit_reset,
                "seed": state.seed,
                "record_bodies": self.record_bodies,
                "max_body_bytes": state.max_body_bytes,
            }

    def reset(self) -> None:
        """Forget faults, settings and everything recorded (the api_key stays)."""
        with self._lock:
            self._state = _State(seed=self._state.seed)
            self._rng = random.Random(self._state.seed)
            self._clear_records()

    # --- what happened -----------------------------------------------------------------------------
    def accepted(self) -> list[AcceptedRecipient]:
        """Every accepted recipient, in arrival order (only with `record_bodies`)."""
        if not self.record_bodies:
            raise RuntimeError(
                "this FakeEsp keeps only delivery ids (record_bodies=False): use delivery_ids()"
            )
        with self._lock:
            return list(self._accepted)

    def delivery_ids(self) -> list[int]:
        """The `custom_args.delivery_id` of every accepted recipient, in arrival order (-1 when absent)."""
        with self._lock:
            return list(self._ids)

    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._requests)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": len(self._requests),
                "outcomes": dict(self._outcomes),
                "accepted": len(self._ids),
                "unique_delivery_ids": self._unique,
                "duplicate_delivery_ids": self._duplicates,
                "bytes_received": self._bytes,
            }

    def wait_for(self, accepted: int, timeout: float = 10.0) -> bool:
        """Wait until at least `accepted` recipients have been accepted; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self._ids) >= accepted:
                    return True
            time.sleep(0.01)
        return False

    # --- the endpoint ------------------------------------------------------------------------------
    def _clear_records(self) -> None:
        self._accepted: list[AcceptedRecipient] = []
        self._ids: array[int] = array("q")
        self._seen = bytearray()
        self._unique = 0
        self._duplicates = 0
        self._requests: list[RequestRecord] = []
        self._outcomes: Counter[str] = Counter()
        self._bytes = 0
        self._issued = 0

    def _pick_fault(self) -> Fault | None:
        draw = self._rng.random()
        threshold = 0.0
        now = time.monotonic()
        for entry in self._state.faults:
            fault, remaining, until = entry
            if remaining == 0 or (until is not None and now >= until):
                continue
            threshold += fault.rate
            if draw < threshold:
                if remaining is not None:
                    entry[1] = remaining - 1
                return fault
        return None

    def _log(
        self, request_id: int, outcome: str, personalizations: int = 0, message_id: str = "", size: int = 0
    ) -> None:
        with self._lock:
            self._requests.append(RequestRecord(request_id, outcome, personalizations, message_id, size))
            self._outcomes[outcome] += 1

    def _mail_send(self, handler: _Handler) -> None:
        data = _read_body(handler)
        with self._lock:
            self._issued += 1
            request_id = self._issued
            fault = self._pick_fault()
            latency = self._state.latency
            reject = self._state.reject
            reset_after = self._state.rate_limit_reset
            max_body_bytes = self._state.max_body_bytes
            self._bytes += len(data)
        if latency and self._stopping.wait(latency):
            return
        if fault is not None and fault.action == "slow":
            if self._stopping.wait(fault.delay) or _client_gone(handler.connection):
                handler.close_connection = True
                self._log(request_id, "abandoned", size=len(data))
                return
            fault = None
        if fault is not None and fault.action == "drop":
            handler.close_connection = True
            self._log(request_id, "dropped", size=len(data))
            return
        if fault is not None and fault.action == "status":
            self._answer_fault(handler, request_id, fault.status, reset_after, len(data))
            return

        if not self._authorized(handler):
            self._log(request_id, "401", size=len(data))
            return
        if len(data) > max_body_bytes:
            self._log(request_id, "413", size=len(data))
            handler._json(413, {"errors": [_error("content too large", None)]})
            return
        try:
            body = json.loads(data)
        except ValueError:
            self._log(request_id, "400", size=len(data))
            handler._json(400, {"errors": [_error("Bad Request", None)]})
            return
        errors = validate_mail_send(body, reject)
        if errors:
            self._log(request_id, "400", len(body.get("personalizations") or ()), size=len(data))
            handler._json(400, {"errors": errors})
            return

        if (body.get("mail_settings") or {}).get("sandbox_mode", {}).get("enable") is True:
            # Validated, never delivered: SendGrid answers 200 (not 202) and records nothing.
            self._log(request_id, "200", len(body["personalizations"]), size=len(data))
            handler._reply(200)
            return
        message_id = uuid.uuid4().hex[:22]
        self._record(body, request_id, message_id)
        self._log(request_id, "202", len(body["personalizations"]), message_id, len(data))
        if fault is not None and fault.action == "drop_after_accept":
            handler.close_connection = True
            return
        if fault is not None and fault.action == "hang_after_accept":
            self._hang(handler, fault.delay)
            return
        handler._reply(202, b"", {"X-Message-Id": message_id})

    def _hang(self, handler: _Handler, delay: float) -> None:
        """Say nothing for `delay` seconds or until the client gives up, then close the connection."""
        deadline = time.monotonic() + delay
        while not _client_gone(handler.connection) and time.monotonic() < deadline:
            if self._stopping.wait(0.02):
                break
        handler.close_connection = True

    def _authorized(self, handler: _Handler) -> bool:
        """The Bearer key is there (and is `api_key` when one is set); else answer 401 and say False."""
        auth = handler.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            handler._json(401, {"errors": [_error("authorization required", None)]})
            return False
        if self.api_key is not None and auth[7:] != self.api_key:
            message = "The provided authorization grant is invalid, expired, or revoked"
            handler._json(401, {"errors": [_error(message, None)]})
            return False
        return True

    def _scopes(self, handler: _Handler) -> None:
        """`GET /v3/scopes`: an authenticated read that changes nothing (what the key may do)."""
        if self._authorized(handler):
            handler._json(200, {"scopes": ["mail.send"]})

    # --- connection-level faults (in this process only) -----------------------------------------
    def refuse_connections(self) -> None:
        """Stop listening: every connection is refused until `accept_connections` (same port)."""
        port = self.port
        self.stop()
        self.port = port

    def accept_connections(self) -> None:
        """Listen again on the same port after `refuse_connections`."""
        for _ in range(50):
            try:
                self.start()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"the fake ESP could not listen on port {self.port} again")

    def _answer_fault(
        self, handler: _Handler, request_id: int, status: int, reset_after: float, size: int
    ) -> None:
        self._log(request_id, str(status), size=size)
        headers: dict[str, str] = {}
        messages = {
            400: "Bad Request",
            401: "The provided authorization grant is invalid, expired, or revoked",
            403: "access forbidden",
            413: "content too large",
            429: "too many requests",
            500: "internal server error",
            503: "service unavailable",
        }
        if status == 429:
            headers = {
                "X-RateLimit-Limit": "600",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(math.ceil(time.time() + reset_after)),
            }
        handler._json(status, {"errors": [_error(messages.get(status, "error"), None)]}, headers)

    def _record(self, body: dict[str, Any], request_id: int, message_id: str) -> None:
        subject = body.get("subject", "")
        ids: list[int] = []
        rows: list[AcceptedRecipient] = []
        for p in body["personalizations"]:
            args = p.get("custom_args") or {}
            raw_id = args.get("delivery_id")
            try:
                delivery_id = int(raw_id) if raw_id is not None else -1
            except ValueError:
                delivery_id = -1
            for to in p["to"]:
                ids.append(delivery_id)
                if self.record_bodies:
                    rows.append(
                        AcceptedRecipient(
                            to["email"],
                            to.get("name"),
                            raw_id,
                            args.get("bulletin_id"),
                            args,
                            p.get("substitutions") or {},
                            p.get("headers") or {},
                            p.get("subject", subject),
                            request_id,
                            message_id,
                        )
                    )
        with self._lock:
            self._accepted.extend(rows)
            self._ids.extend(ids)
            seen = self._seen
            for delivery_id in ids:
                if delivery_id < 0:
                    continue
                byte, bit = divmod(delivery_id, 8)
                if byte >= len(seen):
                    seen.extend(bytes(max(byte + 1 - len(seen), len(seen))))
                if seen[byte] >> bit & 1:
                    self._duplicates += 1
                else:
                    seen[byte] |= 1 << bit
                    self._unique += 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m newsletter.testing.fake_esp", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--port-file", type=Path, help="write the port here once listening")
    parser.add_argument("--api-key", default=None, help="the only Bearer token accepted (default: any)")
    parser.add_argument("--no-record-bodies", action="store_true", help="keep only delivery ids (large runs)")
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args(argv)

    fake = FakeEsp(
        options.host,
        options.port,
        api_key=options.api_key,
        record_bodies=not options.no_record_bodies,
        seed=options.seed,
    )
    fake.start()

    def stop(signum: int, frame: object) -> None:
        fake._stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if options.port_file:
        tmp = options.port_file.with_suffix(".tmp")
        tmp.write_text(str(fake.port))
        os.replace(tmp, options.port_file)
    print(fake.port, flush=True)
    while not fake._stopping.wait(0.5):
        pass
    fake.stop()


if __name__ == "__main__":
    main()
