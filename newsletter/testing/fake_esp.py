"""A fake SendGrid: `POST /v3/mail/send` on loopback, strict about bodies, told how to fail.

Every body is checked against the rules of the Mail Send OpenAPI schema SendGrid publishes (v3
`POST /mail/send`) and the limits its documentation adds: required fields,
at most 1000 personalizations and 1000 recipients, valid addresses, string-only substitutions of at most
10,000 bytes per personalization, string custom_args of at most 10,000 bytes, no reserved headers,
non-empty content with text/plain first. A violation answers 400 with SendGrid's error shape
`{"errors": [{"message", "field", "help"}]}`; otherwise 202 with an `X-Message-Id`, and every recipient is
recorded.

Faults, each at a probability (one seeded draw per request, the rates of the faults add up) or for the
next N requests:
    status          answer 400/401/403/429/500/503/... (429 carries X-RateLimit-Limit/Remaining/Reset)
    slow            wait `delay` seconds, then answer normally, unless the client hung up meanwhile
                    (a timed-out request is then *not* accepted)
    drop            close the connection without answering; nothing is accepted
    drop_after_accept   accept and record the batch, then close without answering (an unknown outcome)
and `reject_pattern`: any batch with an address matching this regex gets a 400 naming that address, so
the dispatcher's split-on-400 can find it.

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
import gzip
import json
import math
import os
import random
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from array import array
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal, NamedTuple
from urllib.parse import parse_qs, urlsplit

MAX_PERSONALIZATIONS = 1000
MAX_RECIPIENTS = 1000
MAX_SUBSTITUTIONS_BYTES = 10_000
MAX_CUSTOM_ARGS_BYTES = 10_000
MAX_BODY_BYTES = 30 * 1024 * 1024
MAX_CATEGORIES = 10
RESERVED_HEADERS = frozenset(
    h.lower()
    for h in (
        "x-sg-id",
        "x-sg-eid",
        "received",
        "dkim-signature",
        "Content-Type",
        "Content-Transfer-Encoding",
        "To",
        "From",
        "Subject",
        "Reply-To",
        "CC",
        "BCC",
    )
)
_HELP = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html#message."
_EMAIL = re.compile(r"^[^@\s<>(),;:\"\[\]\\]+@[^@\s<>(),;:\"\[\]\\]+\.[^@\s<>(),;:\"\[\]\\.]{2,}$")
_MAX_ERRORS = 20

FaultAction = Literal["status", "slow", "drop", "drop_after_accept"]


@dataclass(frozen=True)
class Fault:
    """One way to misbehave: at probability `rate` per request, or only `count` times (then it expires)."""

    action: FaultAction = "status"
    status: int = 500
    rate: float = 1.0
    count: int | None = None
    delay: float = 0.0


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


def _nbytes(s: str) -> int:
    return len(s) if s.isascii() else len(s.encode("utf-8"))


def _error(message: str, field: str | None, help_anchor: str | None = None) -> dict[str, Any]:
    return {"message": message, "field": field, "help": (_HELP + help_anchor) if help_anchor else None}


def _check_address(
    obj: object, where: str, errors: list[dict[str, Any]], reject: re.Pattern[str] | None
) -> None:
    if not isinstance(obj, dict):
        errors.append(_error("Email objects must be objects with an email property.", where))
        return
    email = obj.get("email")
    if not isinstance(email, str) or not _EMAIL.match(email) or (reject is not None and reject.search(email)):
        errors.append(_error("Does not contain a valid address.", where + ".email", "personalizations.to"))
    name = obj.get("name")
    if name is not None and not isinstance(name, str):
        errors.append(
            _error("Invalid type. Expected: string, given: " + type(name).__name__ + ".", where + ".name")
        )


def _check_headers(headers: object, where: str, errors: list[dict[str, Any]]) -> None:
    if not isinstance(headers, dict):
        errors.append(_error("Invalid type. Expected: object.", where, "headers"))
        return
    for key, value in headers.items():
        if key.lower() in RESERVED_HEADERS:
            errors.append(
                _error(f"The header {key} is reserved and may not be set.", f"{where}.{key}", "headers")
            )
        if not isinstance(value, str):
            errors.append(
                _error(
                    f"Invalid type. Expected: string, given: {type(value).__name__}.",
                    f"{where}.{key}",
                    "headers",
                )
            )


def _check_string_map(
    obj: object, where: str, limit: int, what: str, errors: list[dict[str, Any]], anchor: str
) -> None:
    if not isinstance(obj, dict):
        errors.append(_error("Invalid type. Expected: object.", where, anchor))
        return
    total = 0
    for key, value in obj.items():
        if not isinstance(value, str):
            errors.append(
                _error(
                    f"Invalid type. Expected: string, given: {type(value).__name__}.",
                    f"{where}.{key}",
                    anchor,
                )
            )
            continue
        total += _nbytes(key) + _nbytes(value)
    if total > limit:
        errors.append(
            _error(
                f"The total size of {what} may not exceed {limit:,} bytes per personalization.", where, anchor
            )
        )


def validate_mail_send(body: object, reject: re.Pattern[str] | None = None) -> list[dict[str, Any]]:
    """The SendGrid errors a Mail Send body earns (empty when SendGrid would accept it).

    `reject`, when given, makes matching addresses count as invalid ones.
    """
    errors: list[dict[str, Any]] = []
    if not isinstance(body, dict):
        return [_error("Bad Request", None)]
    personalizations = body.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        errors.append(
            _error(
                "The personalizations field is required and must have at least one personalization.",
                "personalizations",
                "personalizations",
            )
        )
        personalizations = []
    elif len(personalizations) > MAX_PERSONALIZATIONS:
        errors.append(
            _error(
                f"You may not have more than {MAX_PERSONALIZATIONS} personalizations per API request.",
                "personalizations",
                "personalizations",
            )
        )
        personalizations = []

    every_has_subject = bool(personalizations)
    recipients = 0
    for i, p in enumerate(personalizations):
        if len(errors) >= _MAX_ERRORS:
            break
        where = f"personalizations.{i}"
        if not isinstance(p, dict):
            errors.append(_error("Personalizations must be objects.", where, "personalizations"))
            continue
        to = p.get("to")
        if not isinstance(to, list) or not to:
            errors.append(
                _error(
                    "The to array is required for all personalization objects, and must have at least one "
                    "email object with a valid email address.",
                    where + ".to",
                    "personalizations.to",
                )
            )
            to = []
        seen: set[str] = set()
        for kind in ("to", "cc", "bcc"):
            addresses = to if kind == "to" else p.get(kind, [])
            if not isinstance(addresses, list):
                errors.append(_error("Invalid type. Expected: array.", f"{where}.{kind}", "personalizations"))
                continue
            recipients += len(addresses)
            for j, a in enumerate(addresses):
                _check_address(a, f"{where}.{kind}.{j}", errors, reject)
                email = a.get("email") if isinstance(a, dict) else None
                if isinstance(email, str):
                    lowered = email.lower()
                    if lowered in seen:
                        errors.append(
                            _error(
                                "Each email address in the personalization block should be unique between to, "
                                "cc, and bcc. We found the first duplicate instance of ["
                                + email
                                + "] in the "
                                f"personalizations.{i}.{kind} field.",
                                f"{where}.{kind}",
                                "personalizations",
                            )
                        )
                    seen.add(lowered)
        subject = p.get("subject")
        if subject is None:
            every_has_subject = False
        elif not isinstance(subject, str) or not subject:
            errors.append(_error("The subject must be a non-empty string.", where + ".subject", "subject"))
        subs = p.get("substitutions")
        if subs is not None:
            _check_string_map(
                subs,
                where + ".substitutions",
                MAX_SUBSTITUTIONS_BYTES,
                "substitutions",
                errors,
                "personalizations.substitutions",
            )
        args = p.get("custom_args")
        if args is not None:
            _check_string_map(
                args, where + ".custom_args", MAX_CUSTOM_ARGS_BYTES, "custom_args", errors, "custom_args"
            )
        headers = p.get("headers")
        if headers is not None:
            _check_headers(headers, where + ".headers", errors)
    if recipients > MAX_RECIPIENTS:
        errors.append(
            _error(
                f"The total number of recipients must be no more than {MAX_RECIPIENTS}.", "personalizations"
            )
        )

    sender = body.get("from")
    if not isinstance(sender, dict) or not isinstance(sender.get("email"), str):
        errors.append(
            _error(
                "The from object must be provided for every email send. It is an object that requires the "
                "email parameter, but may also contain a name parameter.",
                "from.email",
                "from",
            )
        )
    else:
        _check_address(sender, "from", errors, None)
    for key in ("reply_to",):
        if key in body:
            _check_address(body[key], key, errors, None)

    template_id = body.get("template_id")
    subject = body.get("subject")
    if subject is not None and (not isinstance(subject, str) or not subject):
        errors.append(_error("The subject must be a non-empty string.", "subject", "subject"))
    elif subject is None and not every_has_subject and not template_id:
        errors.append(
            _error(
                "The subject is required. You can get around this requirement if you use a template with a "
                "subject defined or if every personalization has a subject defined.",
                "subject",
                "subject",
            )
        )

    content = body.get("content")
    if content is None:
        if not template_id:
            errors.append(
                _error(
                    "Unless a valid template_id is provided, the content parameter is required. There must be at "
                    "least one defined content block.",
                    "content",
                    "content",
                )
            )
    elif not isinstance(content, list) or not content:
        errors.append(
            _error("The content parameter must be an array with at least one block.", "content", "content")
        )
    else:
        types = []
        for i, block in enumerate(content):
            if not isinstance(block, dict):
                errors.append(_error("Content blocks must be objects.", f"content.{i}", "content"))
                continue
            ctype, value = block.get("type"), block.get("value")
            if not isinstance(ctype, str) or not ctype:
                errors.append(
                    _error(
                        "The content type must be a string at least one character in length.",
                        f"content.{i}.type",
                        "content.type",
                    )
                )
            if not isinstance(value, str) or not value:
                errors.append(
                    _error(
                        "The content value must be a string at least one character in length.",
                        f"content.{i}.value",
                        "content.value",
                    )
                )
            types.append(ctype)
        if "text/plain" in types and types.index("text/plain") != 0:
            errors.append(
                _error(
                    "If present, text/plain must be first, followed by text/html, followed by any other content.",
                    "content",
                    "content",
                )
            )
        if types.count("text/plain") > 1 or types.count("text/html") > 1:
            errors.append(
                _error(
                    "If present, text/plain and text/html may only be provided once.", "content", "content"
                )
            )

    if "headers" in body:
        _check_headers(body["headers"], "headers", errors)
    categories = body.get("categories")
    if categories is not None and (
        not isinstance(categories, list)
        or len(categories) > MAX_CATEGORIES
        or not all(isinstance(c, str) and len(c) <= 255 for c in categories)
    ):
        errors.append(
            _error(
                f"Up to {MAX_CATEGORIES} categories of at most 255 characters each.",
                "categories",
                "categories",
            )
        )
    custom_args = body.get("custom_args")
    if isinstance(custom_args, dict):
        _check_string_map(
            custom_args, "custom_args", MAX_CUSTOM_ARGS_BYTES, "custom_args", errors, "custom_args"
        )
    elif custom_args is not None and not isinstance(custom_args, str):
        errors.append(_error("Invalid type. Expected: object.", "custom_args", "custom_args"))
    return errors[:_MAX_ERRORS]


@dataclass
class _State:
    faults: list[list[Any]] = field(default_factory=list)  # [Fault, remaining count or None]
    reject: re.Pattern[str] | None = None
    latency: float = 0.0
    rate_limit_reset: float = 1.0
    seed: int = 0


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
        if url.path == "/_fake/stats":
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


def _client_gone(sock: socket.socket) -> bool:
    """True when the peer has closed its end (a timed-out client), seen without consuming any input."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


class _Controls:
    """Shortcuts shared by the in-process `FakeEsp` and the HTTP-driven `RemoteFakeEsp`."""

    def add_fault(self, fault: Fault) -> None:
        raise NotImplementedError

    def _configure(self, changes: dict[str, Any]) -> None:
        raise NotImplementedError

    def fail(self, status: int, *, rate: float = 1.0, count: int | None = None) -> None:
        """Answer `status` (400/401/403/429/500/503...) at `rate`, or to the next `count` requests."""
        self.add_fault(Fault("status", status=status, rate=rate, count=count))

    def slow(self, delay: float, *, rate: float = 1.0, count: int | None = None) -> None:
        """Wait `delay` seconds before answering; a client that gave up meanwhile has sent nothing."""
        self.add_fault(Fault("slow", delay=delay, rate=rate, count=count))

    def drop(self, *, rate: float = 1.0, count: int | None = None, after_accept: bool = False) -> None:
        """Close the connection without an answer, before (default) or after accepting the batch."""
        self.add_fault(Fault("drop_after_accept" if after_accept else "drop", rate=rate, count=count))

    def reject_addresses(self, pattern: str) -> None:
        """Answer 400 ("Does not contain a valid address.") to any batch with an address matching `pattern`."""
        self._configure({"reject_pattern": pattern})

    def clear_faults(self) -> None:
        self._configure({"faults": [], "reject_pattern": ""})


class FakeEsp(_Controls):
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
    ) -> None:
        """Change what is given; `faults` replaces the list, `add_faults` appends, `reject_pattern=""` clears."""
        with self._lock:
            state = self._state
            if faults is not None:
                state.faults = [[f, f.count] for f in faults]
            state.faults.extend([f, f.count] for f in add_faults)
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

    def add_fault(self, fault: Fault) -> None:
        self.configure(add_faults=[fault])

    def _configure(self, changes: dict[str, Any]) -> None:
        self.configure(**changes)

    def config(self) -> dict[str, Any]:
        with self._lock:
            state = self._state
            return {
                "faults": [dict(asdict(f), remaining=n) for f, n in state.faults],
                "reject_pattern": state.reject.pattern if state.reject else "",
                "latency": state.latency,
                "rate_limit_reset": state.rate_limit_reset,
                "seed": state.seed,
                "record_bodies": self.record_bodies,
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
        for entry in self._state.faults:
            fault, remaining = entry
            if remaining == 0:
                continue
            threshold += fault.rate
            if draw < threshold:
                if remaining is not None:
                    entry[1] = remaining - 1
                return fault
        return None

    def _log(self, request_id: int, outcome: str, personalizations: int = 0, message_id: str = "") -> None:
        with self._lock:
            self._requests.append(RequestRecord(request_id, outcome, personalizations, message_id))
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
            self._bytes += len(data)
        if latency and self._stopping.wait(latency):
            return
        if fault is not None and fault.action == "slow":
            if self._stopping.wait(fault.delay) or _client_gone(handler.connection):
                handler.close_connection = True
                self._log(request_id, "abandoned")
                return
            fault = None
        if fault is not None and fault.action == "drop":
            handler.close_connection = True
            self._log(request_id, "dropped")
            return
        if fault is not None and fault.action == "status":
            self._answer_fault(handler, request_id, fault.status, reset_after)
            return

        auth = handler.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            self._log(request_id, "401")
            handler._json(401, {"errors": [_error("authorization required", None)]})
            return
        if self.api_key is not None and auth[7:] != self.api_key:
            self._log(request_id, "401")
            handler._json(
                401,
                {
                    "errors": [
                        _error("The provided authorization grant is invalid, expired, or revoked", None)
                    ]
                },
            )
            return
        if len(data) > MAX_BODY_BYTES:
            self._log(request_id, "413")
            handler._json(413, {"errors": [_error("content too large", None)]})
            return
        try:
            body = json.loads(data)
        except ValueError:
            self._log(request_id, "400")
            handler._json(400, {"errors": [_error("Bad Request", None)]})
            return
        errors = validate_mail_send(body, reject)
        if errors:
            self._log(request_id, "400", len(body.get("personalizations") or ()))
            handler._json(400, {"errors": errors})
            return

        message_id = uuid.uuid4().hex[:22]
        self._record(body, request_id, message_id)
        self._log(request_id, "202", len(body["personalizations"]), message_id)
        if fault is not None and fault.action == "drop_after_accept":
            handler.close_connection = True
            return
        handler._reply(202, b"", {"X-Message-Id": message_id})

    def _answer_fault(self, handler: _Handler, request_id: int, status: int, reset_after: float) -> None:
        self._log(request_id, str(status))
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


class RemoteFakeEsp(_Controls):
    """Drives a fake ESP running in another process through its `/_fake/...` HTTP control API."""

    def __init__(self, url: str, process: subprocess.Popen[bytes] | None = None) -> None:
        self.url = url.rstrip("/")
        self.process = process

    def _call(self, method: str, path: str, payload: object = None) -> Any:
        data = json.dumps(payload).encode() if payload is not None else (b"" if method == "POST" else None)
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    def _configure(self, changes: dict[str, Any]) -> None:
        self.configure(**changes)

    def configure(self, **changes: Any) -> None:
        """As `FakeEsp.configure`, over HTTP."""
        for key in ("faults", "add_faults"):
            if key in changes:
                changes[key] = [asdict(f) if isinstance(f, Fault) else f for f in changes[key]]
        self._call("POST", "/_fake/config", changes)

    def add_fault(self, fault: Fault) -> None:
        self._call("POST", "/_fake/faults", asdict(fault))

    def reset(self) -> None:
        self._call("POST", "/_fake/reset")

    def config(self) -> dict[str, Any]:
        return self._call("GET", "/_fake/config")

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/_fake/stats")

    def recipients(self, offset: int = 0, limit: int = 100_000_000) -> dict[str, Any]:
        return self._call("GET", f"/_fake/recipients?offset={offset}&limit={limit}")


@contextmanager
def spawn_fake_esp(*args: str, timeout: float = 15.0) -> Iterator[RemoteFakeEsp]:
    """Run `python -m newsletter.testing.fake_esp --port 0 ARGS...` for the duration of the block."""
    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port"
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "newsletter.testing.fake_esp",
                "--port",
                "0",
                "--port-file",
                str(port_file),
                *args,
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + timeout
            while not port_file.exists():
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the fake ESP did not start")
                time.sleep(0.02)
            yield RemoteFakeEsp(f"http://127.0.0.1:{port_file.read_text().strip()}", process)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


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
