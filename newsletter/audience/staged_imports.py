"""A checked CSV kept for the real import: after a dry run, the volunteer presses "Import these rows"
instead of picking the file again.

The text is kept in a private temporary folder (mode 0700) under an unguessable token, with who uploaded
it and when; only that person can use it, within `STAGED_IMPORT_SECONDS`, and only once.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
import time
from pathlib import Path

from newsletter.core.errors import NewsletterError

STAGED_IMPORT_SECONDS = 3600
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{32}$")


def _folder() -> Path:
    folder = Path(tempfile.gettempdir()) / f"newsletter-staged-imports-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


def stage(text: str, filename: str, user: str) -> str:
    """Keep `text` for `user`; returns the token the confirm button sends back."""
    token = secrets.token_urlsafe(24)
    record = {"user": user, "filename": filename, "at": time.time(), "text": text}
    path = _folder() / f"{token}.json"
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="utf-8") as handle:
        json.dump(record, handle)
    return token


def take(token: str, user: str) -> tuple[str, str]:
    """(filename, text) staged under `token` by `user`, removed so it is imported once; NewsletterError
    when it is unknown, someone else's or too old (upload the file again)."""
    path = _folder() / f"{token}.json"
    try:
        if not _TOKEN.match(token):
            raise FileNotFoundError(token)
        record = json.loads(path.read_text("utf-8"))
    except (FileNotFoundError, json.JSONDecodeError) as exc:
        raise NewsletterError("that checked file is no longer available: upload it again") from exc
    if record.get("user") != user or time.time() - float(record.get("at", 0)) > STAGED_IMPORT_SECONDS:
        raise NewsletterError("that checked file is no longer available: upload it again")
    path.unlink(missing_ok=True)
    return str(record["filename"]), str(record["text"])
