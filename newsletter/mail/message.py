"""One recipient's complete RFC 5322 message: what the outbox writes and the SMTP backend sends.

`multipart/alternative` with the text part first and the HTML part last (clients show the last part
they can), headers for bulk mail (List-Unsubscribe with RFC 8058 one-click, List-Id per RFC 2919),
non-ASCII names and subjects as RFC 2047 encoded words, internationalised domains as IDNA. Serialise
with `message.as_bytes()`: the message carries `email.policy.SMTP` (`SMTPUTF8` for the rare address
with a non-ASCII local part), so lines end in CRLF.

Nothing a subscriber typed can make a header: every control character (CR and LF above all) in a
name, subject or link is replaced before it reaches one, and names and subjects are never decoded as
RFC 2047 encoded words (`header_safe_name`). Python 3.11 before 3.11.10 does not check this itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email import policy
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

import idna

from newsletter.content.render import personalize
from newsletter.content.types import Recipient, RenderedVariant
from newsletter.core.config import Settings
from newsletter.mail.links import header_safe_name

# refold_source="none": headers stored with set_raw (already one line per URL) are written unchanged.
_SMTP = policy.SMTP.clone(refold_source="none")
_SMTPUTF8 = policy.SMTPUTF8.clone(refold_source="none")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def header_safe(value: str) -> str:
    """`value` on one line: control characters become spaces, runs of whitespace one space."""
    return " ".join(_CONTROL.sub(" ", value).split())


def list_unsubscribe_headers(values: Mapping[str, str], mailto: str | None) -> dict[str, str]:
    """`List-Unsubscribe` (https link, then the mailto link when there is one) and RFC 8058's
    `List-Unsubscribe-Post`, for one recipient. The web app's POST /unsubscribe/{token} honours it."""
    links = [f"<{header_safe(values['unsubscribe_url'])}>"]
    if mailto:
        links.append(f"<{header_safe(mailto)}>")
    return {
        "List-Unsubscribe": ", ".join(links),
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


def list_id(settings: Settings, *, encoded_words: bool = False) -> str:
    """RFC 2919 `List-Id`: the organisation's name as the phrase, `LIST_ID` as the identifier.

    A name that is not ASCII is left as text for Python's email policy, which writes it as RFC 2047
    encoded words; with `encoded_words` it is encoded here, for a header handed over as a string
    (SendGrid's `headers`: header fields are ASCII, RFC 5322 §2.2)."""
    name = header_safe_name(settings.ORG_NAME)
    ident = header_safe(settings.LIST_ID)
    if name.isascii():
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{quoted}" <{ident}>'
    if encoded_words:
        return f"{Header(name, 'utf-8').encode(linesep='')} <{ident}>"
    return f"{name} <{ident}>"


def ascii_domain(domain: str) -> str:
    """An internationalised domain in its ASCII form, as DNS and ESP APIs take it, by IDNA 2008 (the
    `idna` package, as email-validator checks it): Python's own "idna" codec is IDNA 2003, which maps
    `straße.de` to `strasse.de`, another domain. An ASCII domain is returned as it is."""
    return domain if domain.isascii() else idna.encode(domain, uts46=True).decode("ascii")


def ascii_address(email: str) -> str:
    """`email` with its domain in ASCII form (`ascii_domain`) and its local part as it is: what the SMTP
    envelope, the `To:` header and ESP APIs carry. Subscribers' addresses are stored with the Unicode
    domain; a relay without SMTPUTF8 (RFC 6531) takes this form, so only a non-ASCII local part needs
    that extension. Raises `idna.IDNAError` for a domain that IDNA 2008 refuses."""
    local, at, domain = email.rpartition("@")
    if not at or domain.isascii():
        return email
    return f"{local}@{ascii_domain(domain)}"


def _address(name: str, email: str) -> Address:
    """An address header value; an internationalised domain is written in its ASCII form."""
    addr = header_safe(email)
    local, at, domain = addr.rpartition("@")
    if not at or not local or not domain or " " in addr:
        raise ValueError(f"not an email address: {email!r}")
    local, _, domain = ascii_address(addr).rpartition("@")
    if not local.isascii():
        # Only deliverable over SMTPUTF8; build_message switches the policy for such a recipient.
        return Address(display_name=header_safe_name(name), username=local, domain=domain)
    return Address(display_name=header_safe_name(name), addr_spec=f"{local}@{domain}")


def _set_subject(msg: EmailMessage, subject: str) -> None:
    """Set the Subject so that it reads back exactly as written.

    The email package folds a long non-ASCII header into RFC 2047 encoded words, and may fold at a
    space between two of them: that space becomes folding whitespace, which a reader drops (RFC 2047
    section 6.2), so "a¡ ¡" would arrive as "a¡¡". Such a subject is therefore encoded here, whole, so
    that every space is inside an encoded word. ASCII folds safely, and an SMTPUTF8 message carries the
    text as it is."""
    if subject.isascii() or msg.policy.utf8:  # type: ignore[attr-defined]
        msg["Subject"] = subject
        return
    msg.set_raw("Subject", Header(subject, "utf-8", header_name="Subject").encode(linesep="\n"))


def build_message(
    settings: Settings,
    variant: RenderedVariant,
    recipient: Recipient,
    values: Mapping[str, str],
    *,
    message_id: str | None = None,
    date: datetime | None = None,
) -> EmailMessage:
    """The message `recipient` receives of `variant`, personalised with `values` (see `Links.values`).

    Bulletin variants carry List-Unsubscribe (with the mailto link when `values` has
    `unsubscribe_mailto`), List-Unsubscribe-Post and List-Id; a confirmation email (a variant without
    regions) is transactional and carries none of them.
    """
    html, text = personalize(variant, values)
    to_addr = _address(recipient.name, recipient.email)
    msg = EmailMessage(policy=_SMTP if to_addr.username.isascii() else _SMTPUTF8)
    from_addr = _address(settings.FROM_NAME, settings.FROM_EMAIL)
    msg["From"] = from_addr
    msg["To"] = to_addr
    if settings.REPLY_TO.strip():
        msg["Reply-To"] = _address("", settings.REPLY_TO)
    _set_subject(msg, header_safe_name(variant.subject))
    msg["Date"] = format_datetime(date or datetime.now(UTC))
    msg["Message-ID"] = header_safe(message_id) if message_id else make_msgid(domain=from_addr.domain)
    if variant.regions:
        msg["List-Id"] = list_id(settings)
        for name, value in list_unsubscribe_headers(values, values.get("unsubscribe_mailto")).items():
            # Written as is: the email package would turn a URL longer than a line into encoded words.
            msg.set_raw(name, value.replace(", ", ",\n "))
    msg.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    msg.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    return msg
