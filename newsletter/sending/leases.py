"""Who holds a lease, and whether that process is provably gone.

A lease token is `host:pid:random` (the worker's name, then a value unique to the batch). After a
`kill -9`, the rerun need not wait out `LEASE_SECONDS`: a lease taken on this host by a pid that no
longer exists cannot still be sending, so it is taken over at once. A lease of another host, or of a
live pid, is only waited for (and the wait is said aloud, see `Dispatcher.run_until_done`).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable


def holder(token: str) -> str:
    """The worker (`host:pid`) of a lease token."""
    worker, _, _ = token.rpartition(":")
    return worker or token


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


def is_dead(token: str, host: str | None = None) -> bool:
    """True when the token's worker ran on this host and its pid is gone; False when unsure."""
    host = host if host is not None else socket.gethostname()[:40]
    worker_host, _, pid_text = holder(token).rpartition(":")
    if worker_host != host or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    return pid != os.getpid() and not _pid_alive(pid)


def dead_tokens(tokens: Iterable[str]) -> list[str]:
    """The tokens among `tokens` whose worker is provably dead."""
    host = socket.gethostname()[:40]
    return [t for t in tokens if is_dead(t, host)]
