"""SMTP: one complete message per recipient over a connection kept open between batches.

Each thread keeps its own connection (smtplib connections are not thread-safe), opened with STARTTLS
when `SMTP_STARTTLS` is on and logged in when `SMTP_USERNAME` is set. A connection the server closed
while idle is noticed (NOOP before a batch, or a disconnect mid-batch) and reopened once.

Outcomes per recipient: a refused RCPT or DATA with a 5xx code is permanent (a bad address), with a 4xx
code retryable later. Batch-wide: a connection that cannot be opened, or is lost before anyone in the
batch was accepted, raises `RetryableError`; lost after some were accepted, the rest come back as
retryable refusals so that the accepted ones are not sent twice. A refused login (or a server without
STARTTLS or AUTH when they are configured, or a sender address it refuses for good) raises
`AuthFailed`: every batch would fail the same way.

The envelope (MAIL FROM, RCPT TO) carries a domain in its ASCII form (`ascii_address`, IDNA 2008), as
the `To:` header does, so a recipient at an internationalised domain (carol@bücher.de) goes through
any relay. Only a non-ASCII local part needs SMTPUTF8 (RFC 6531): a server that does not offer it
cannot take such a recipient, who is refused permanently, alone, while the rest of the batch goes out.
It is never a lost connection, which would hold the whole bulletin back as an outage.
"""

from __future__ import annotations

import contextlib
import smtplib
import ssl
import threading
from collections.abc import Mapping, Sequence

import idna

from newsletter.content.types import Recipient, RenderedVariant
from newsletter.core.config import Settings
from newsletter.core.errors import ConfigError
from newsletter.esp.base import AuthFailed, RecipientResult, RetryableError
from newsletter.mail.fast_message import MessageTemplate, dot_stuff, render_or_build, template_cache
from newsletter.mail.links import Links
from newsletter.mail.message import ascii_address, build_message


class _ConnectionLost(Exception):
    pass


class SmtpBackend:
    """Sends through `SMTP_HOST:SMTP_PORT`. `ssl_context` defaults to the system's trusted CAs."""

    name = "smtp"

    def __init__(
        self, settings: Settings, *, links: Links | None = None, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        if not settings.SMTP_HOST:
            raise ConfigError("SMTP_HOST is not set: the smtp backend needs a server to send through")
        self.settings = settings
        self.max_batch = settings.BATCH_SIZE
        self.links = links if links is not None else Links(settings)
        self.ssl_context = ssl_context
        try:
            self.envelope_from = ascii_address(settings.FROM_EMAIL)
        except idna.IDNAError as exc:
            raise ConfigError(
                f"FROM_EMAIL {settings.FROM_EMAIL!r} has a domain IDNA 2008 refuses: {exc}"
            ) from exc
        self._templates = template_cache(settings)
        self._local = threading.local()
        self._open: set[smtplib.SMTP] = set()
        self._open_lock = threading.Lock()

    # --- the connection ----------------------------------------------------------------------------
    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        try:
            conn = smtplib.SMTP(s.SMTP_HOST, s.SMTP_PORT, timeout=s.SMTP_TIMEOUT)
        except (OSError, smtplib.SMTPException) as exc:
            raise RetryableError(f"cannot connect to SMTP server {s.SMTP_HOST}:{s.SMTP_PORT}: {exc}") from exc
        try:
            conn.ehlo()
            if s.SMTP_STARTTLS:
                conn.starttls(context=self.ssl_context or ssl.create_default_context())
                conn.ehlo()
            if s.SMTP_USERNAME:
                conn.login(s.SMTP_USERNAME, s.SMTP_PASSWORD)
        except smtplib.SMTPAuthenticationError as exc:
            _quietly_close(conn)
            raise AuthFailed(f"SMTP server refused the login of {s.SMTP_USERNAME!r}: {_reply(exc)}") from exc
        except smtplib.SMTPNotSupportedError as exc:
            _quietly_close(conn)
            raise AuthFailed(f"SMTP server {s.SMTP_HOST} does not offer what is configured: {exc}") from exc
        except ssl.SSLCertVerificationError as exc:
            _quietly_close(conn)
            raise AuthFailed(
                f"SMTP server {s.SMTP_HOST} presented a certificate we do not trust: {exc}"
            ) from exc
        except (OSError, smtplib.SMTPException) as exc:
            _quietly_close(conn)
            raise RetryableError(f"SMTP session setup with {s.SMTP_HOST} failed: {exc}") from exc
        with self._open_lock:
            self._open.add(conn)
        return conn

    def _connection(self) -> smtplib.SMTP:
        """This thread's connection, checked with a NOOP and reopened if the server dropped it."""
        conn: smtplib.SMTP | None = getattr(self._local, "conn", None)
        if conn is not None:
            try:
                code, _ = conn.noop()
                if code == 250:
                    return conn
            except (OSError, smtplib.SMTPException):
                pass
            self._discard(conn)
        conn = self._connect()
        self._local.conn = conn
        return conn

    def probe(self, variant: RenderedVariant) -> None:
        """Connect, EHLO, STARTTLS and AUTH as configured, then say goodbye: nobody is mailed."""
        conn = self._connect()
        with self._open_lock:
            self._open.discard(conn)
        _quietly_close(conn)

    def _discard(self, conn: smtplib.SMTP) -> None:
        _quietly_close(conn)
        with self._open_lock:
            self._open.discard(conn)
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None

    # --- sending -----------------------------------------------------------------------------------
    def send(self, variant: RenderedVariant, recipients: Sequence[Recipient]) -> list[RecipientResult]:
        results: list[RecipientResult] = []
        template = self._templates(variant) if len(recipients) > 1 else None
        conn = self._connection()
        for index, recipient in enumerate(recipients):
            values = self.links.values(recipient, fields=variant.html_placeholders)
            try:
                try:
                    results.append(self._send_one(conn, variant, template, recipient, values))
                except _ConnectionLost:
                    self._discard(conn)
                    conn = self._connect()
                    self._local.conn = conn
                    results.append(self._send_one(conn, variant, template, recipient, values))
            except (_ConnectionLost, RetryableError) as exc:
                if not any(r.accepted for r in results):
                    raise RetryableError(f"SMTP connection lost: {exc}") from exc
                reason = f"SMTP connection lost mid-batch: {exc}"
                results.extend(
                    RecipientResult(r, False, error=reason, permanent=False) for r in recipients[index:]
                )
                break
        return results

    def _send_one(
        self,
        conn: smtplib.SMTP,
        variant: RenderedVariant,
        template: MessageTemplate | None,
        recipient: Recipient,
        values: Mapping[str, str],
    ) -> RecipientResult:
        try:
            envelope_to = ascii_address(recipient.email)
        except idna.IDNAError as exc:
            return RecipientResult(
                recipient, False, error=f"not deliverable: its domain is not a valid IDNA 2008 name ({exc})"
            )
        try:
            if (envelope_to + self.envelope_from).isascii():
                data, message_id = render_or_build(template, self.settings, variant, recipient, values)
                self._transaction(conn, envelope_to, dot_stuff(data))
            else:
                self._check_smtputf8(conn)
                # SMTPUTF8 negotiation is smtplib's own path, kept for the rare such address.
                message = build_message(self.settings, variant, recipient, values)
                message_id = str(message["Message-ID"])
                conn.send_message(message, from_addr=self.envelope_from, to_addrs=[envelope_to])
        except smtplib.SMTPNotSupportedError as exc:
            # About this recipient's address alone (an SMTPException, so an OSError: caught before the
            # lost connection below, which would hold the whole bulletin back as an outage).
            return RecipientResult(
                recipient, False, error=f"not deliverable through {self.settings.SMTP_HOST}: {exc}"
            )
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()), (550, b"refused"))
            return _refused(recipient, "RCPT", code, text)
        except smtplib.SMTPDataError as exc:
            return _refused(recipient, "DATA", exc.smtp_code, exc.smtp_error)
        except smtplib.SMTPSenderRefused as exc:
            if 500 <= exc.smtp_code < 600:
                raise AuthFailed(
                    f"SMTP server refuses the sender {self.envelope_from}: {_reply(exc)}"
                ) from exc
            raise RetryableError(f"SMTP server refuses the sender for now: {_reply(exc)}") from exc
        except smtplib.SMTPResponseException as exc:
            if exc.smtp_code == 421:  # the server is closing the connection
                raise _ConnectionLost(_reply(exc)) from exc
            return _refused(recipient, "SMTP", exc.smtp_code, exc.smtp_error)
        except (OSError, smtplib.SMTPServerDisconnected) as exc:
            raise _ConnectionLost(f"{type(exc).__name__}: {exc}") from exc
        return RecipientResult(recipient, True, message_id=message_id)

    def _check_smtputf8(self, conn: smtplib.SMTP) -> None:
        """Raise `SMTPNotSupportedError` (this recipient refused) when the server cannot take an address
        with a non-ASCII local part, or `AuthFailed` when that address is the sender's: every recipient
        would be refused the same way, which is the configuration's fault, not theirs."""
        if conn.does_esmtp and conn.has_extn("smtputf8"):
            return
        if not self.envelope_from.isascii():
            raise AuthFailed(
                f"SMTP server {self.settings.SMTP_HOST} does not offer SMTPUTF8, which the sender "
                f"{self.envelope_from} needs (a non-ASCII local part)"
            )
        raise smtplib.SMTPNotSupportedError(
            "the address has a non-ASCII local part, which needs SMTPUTF8, and the server does not offer it"
        )

    def _transaction(self, conn: smtplib.SMTP, envelope_to: str, stuffed: bytes) -> None:
        """MAIL, RCPT, DATA and the message (already dot-stuffed), raising smtplib's exceptions as
        `sendmail` does. With PIPELINING (RFC 2920) the three commands go in one write, so a message
        costs one round trip before its content instead of three."""
        commands = (
            f"MAIL FROM:{smtplib.quoteaddr(self.envelope_from)}",
            f"RCPT TO:{smtplib.quoteaddr(envelope_to)}",
            "DATA",
        )
        if conn.does_esmtp and conn.has_extn("pipelining"):
            conn.send("".join(c + "\r\n" for c in commands))
            replies = [conn.getreply() for _ in commands]
        else:
            replies = []
            for command in commands:
                replies.append(conn.docmd(command))
                if replies[-1][0] not in (250, 251, 354):
                    break
        (mail_code, mail_text), *rest = replies
        if mail_code == 421 or any(code == 421 for code, _ in rest):
            raise smtplib.SMTPResponseException(421, mail_text)
        if mail_code != 250:
            self._reset(conn, replies)
            raise smtplib.SMTPSenderRefused(mail_code, mail_text, self.envelope_from)
        rcpt_code, rcpt_text = rest[0]
        if rcpt_code not in (250, 251):
            self._reset(conn, replies)
            raise smtplib.SMTPRecipientsRefused({envelope_to: (rcpt_code, rcpt_text)})
        data_code, data_text = rest[1]
        if data_code != 354:
            self._reset(conn, replies)
            raise smtplib.SMTPDataError(data_code, data_text)
        conn.send(stuffed + b".\r\n")
        code, text = conn.getreply()
        if code != 250:
            if code == 421:
                raise smtplib.SMTPResponseException(code, text)
            raise smtplib.SMTPDataError(code, text)

    @staticmethod
    def _reset(conn: smtplib.SMTP, replies: list[tuple[int, bytes]]) -> None:
        """RSET after a refused command. A DATA the server accepted anyway (a pipelined group whose
        recipient was refused) is ended first, empty: the server has no recipient to deliver it to."""
        if len(replies) == 3 and replies[2][0] == 354:
            conn.send(b".\r\n")
            conn.getreply()
        conn.rset()

    def close(self) -> None:
        with self._open_lock:
            connections, self._open = self._open, set()
        for conn in connections:
            try:
                conn.quit()
            except (OSError, smtplib.SMTPException):
                _quietly_close(conn)
        self._local = threading.local()


def _reply(exc: smtplib.SMTPResponseException) -> str:
    text = (
        exc.smtp_error.decode("utf-8", "replace")
        if isinstance(exc.smtp_error, bytes)
        else str(exc.smtp_error)
    )
    return f"{exc.smtp_code} {text}"


def _refused(recipient: Recipient, stage: str, code: int, text: bytes | str) -> RecipientResult:
    reason = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    return RecipientResult(
        recipient, False, error=f"{stage} refused: {code} {reason}", permanent=not 400 <= code < 500
    )


def _quietly_close(conn: smtplib.SMTP) -> None:
    with contextlib.suppress(OSError):
        conn.close()
