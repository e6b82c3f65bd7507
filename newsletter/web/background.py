"""Work a request starts but does not wait for (confirmation and my-data emails), counted.

FastAPI runs `BackgroundTasks` after the response is sent, so the answer never waits for the ESP and
takes as long whatever the address. `InFlight` counts what is still running, so that a clean shutdown
(and a test) can wait for it: `app.state.background.wait_idle(timeout)`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from fastapi import BackgroundTasks, Request


class InFlight:
    def __init__(self) -> None:
        self._count = 0
        self._idle = threading.Condition()

    def start(self) -> None:
        with self._idle:
            self._count += 1

    def done(self) -> None:
        with self._idle:
            self._count -= 1
            self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """True once nothing is running; False if something still is after `timeout` seconds."""
        with self._idle:
            return self._idle.wait_for(lambda: self._count == 0, timeout)


def after_response(request: Request, background: BackgroundTasks, fn: Callable[..., Any], *args: Any) -> None:
    """Run `fn(*args)` in the threadpool once the response is sent, counted in `app.state.background`."""
    tracker: InFlight = request.app.state.background
    tracker.start()

    def run() -> None:
        try:
            fn(*args)
        finally:
            tracker.done()

    background.add_task(run)
