"""The fake ESP in a process of its own (benchmarks, crash tests), driven over its HTTP control API.

with spawn_fake_esp("--no-record-bodies") as fake:     # python -m newsletter.testing.fake_esp
    fake.fail(503, rate=0.1); ...; fake.stats()
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from newsletter.testing.faults import Fault, FaultControls


class RemoteFakeEsp(FaultControls):
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
