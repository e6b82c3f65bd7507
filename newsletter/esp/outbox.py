"""The outbox: every message written as an `.eml` file instead of sent, so a whole run works offline.

Layout under `OUTBOX_DIR`:
    bulletin-<bulletin id>/<delivery id>.eml     a bulletin's deliveries (a resend overwrites, never doubles)
    direct/<UTC time>-<random>.eml               test sends, confirmations: anything without a delivery

Each file is the complete RFC 5322 message (the bytes of `newsletter.mail.message.build_message`,
made by `newsletter.mail.fast_message`: both parts, every header), written to a temporary name and renamed into place, so a reader never sees half a message.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from newsletter.content.types import Recipient, RenderedVariant
from newsletter.core.config import Settings
from newsletter.esp.base import RecipientResult, RetryableError
from newsletter.mail.fast_message import render_or_build, template_cache
from newsletter.mail.links import Links

DIRECT_DIR = "direct"


def bulletin_dir(outbox: Path, bulletin_id: int) -> Path:
    return outbox / f"bulletin-{bulletin_id}"


class OutboxBackend:
    """Writes one `.eml` per recipient under `OUTBOX_DIR`; every recipient is accepted with its Message-ID."""

    name = "outbox"

    def __init__(self, settings: Settings, *, links: Links | None = None) -> None:
        self.settings = settings
        self.root = Path(settings.OUTBOX_DIR)
        self.max_batch = settings.BATCH_SIZE
        self.links = links if links is not None else Links(settings)
        self._made: set[Path] = set()
        self._templates = template_cache(settings)

    def path_for(self, variant: RenderedVariant, recipient: Recipient) -> Path:
        bulletin_id = recipient.bulletin_id if recipient.bulletin_id is not None else variant.bulletin_id
        if recipient.delivery_id is not None and bulletin_id is not None:
            return bulletin_dir(self.root, bulletin_id) / f"{recipient.delivery_id}.eml"
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        return self.root / DIRECT_DIR / f"{stamp}-{secrets.token_hex(4)}.eml"

    def send(self, variant: RenderedVariant, recipients: Sequence[Recipient]) -> list[RecipientResult]:
        results = []
        template = self._templates(variant) if len(recipients) > 1 else None
        for recipient in recipients:
            values = self.links.values(recipient, fields=variant.html_placeholders)
            data, message_id = render_or_build(template, self.settings, variant, recipient, values)
            path = self.path_for(variant, recipient)
            try:
                self._write(path, data)
            except OSError as exc:
                # A full disk or a permission problem: the files written so far are complete and a
                # retry rewrites them under the same names, so retrying the batch is safe.
                raise RetryableError(f"cannot write {path}: {exc}") from exc
            results.append(RecipientResult(recipient, True, message_id=message_id))
        return results

    def _write(self, path: Path, data: bytes) -> None:
        folder = path.parent
        if folder not in self._made:
            folder.mkdir(parents=True, exist_ok=True)
            self._made.add(folder)
        tmp = folder / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def probe(self, variant: RenderedVariant) -> None:
        """`OUTBOX_DIR` takes a file (created if missing): a full or read-only disk shows here."""
        try:
            self._write(self.root / ".probe", b"probe\n")
            (self.root / ".probe").unlink(missing_ok=True)
        except OSError as exc:
            raise RetryableError(f"OUTBOX_DIR {self.root} is not writable: {exc}") from exc

    def close(self) -> None:
        self._made.clear()
