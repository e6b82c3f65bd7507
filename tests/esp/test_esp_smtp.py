"""The SMTP backend against a real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from newsletter.content.types import Recipient, RenderedVariant
from newsletter.core.config import Settings
from newsletter.esp import backend_for
from newsletter.esp.base import AuthFailed, RetryableError
from newsletter.esp.smtp import SmtpBackend
from tests.fixtures_esp import unsubscribe_url_of

if TYPE_CHECKING:
    from tests.fixtures_esp import SmtpTestServer


Recipients = Callable[..., list[Recipient]]
USER, PASSWORD = "mailer", "correct horse battery staple"  # tests/fixtures_esp.py SMTP_USERS


def smtp_settings(basic: Settings, port: int, **update: object) -> Settings:
    values: dict[str, object] = {
        "ESP_BACKEND": "smtp",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": port,
        "SMTP_STARTTLS": False,
        "SMTP_TIMEOUT": 5.0,
    }
    values.update(update)
    return basic.model_copy(update=values)


@pytest.fixture
def backend(basic_settings: Settings, smtp_server: SmtpTestServer) -> Iterator[SmtpBackend]:
    backend = SmtpBackend(smtp_settings(basic_settings, smtp_server.port))
    yield backend
    backend.close()


def test_each_recipient_gets_their_own_complete_message(
    backend: SmtpBackend,
    smtp_server: SmtpTestServer,
    basic_settings: Settings,
    esp_variant: RenderedVariant,
    esp_recipients: Recipients,
) -> None:
    recipients = esp_recipients(3)
    results = backend.send(esp_variant, recipients)

    assert all(r.accepted for r in results)
    received = smtp_server.messages
    assert [m.rcpt_tos for m in received] == [[r.email] for r in recipients]
    assert {m.mail_from for m in received} == {"bulletin@example.org"}
    for result, message in zip(results, smtp_server.parsed(), strict=True):
        assert message["Message-ID"] == result.message_id
        unsubscribe_url_of(message, basic_settings, result.recipient)
        text = message.get_body(("plain",))
        assert text is not None and f"Dear {result.recipient.name}," in text.get_content()


def test_the_connection_is_kept_open_across_batches(
    backend: SmtpBackend,
    smtp_server: SmtpTestServer,
    esp_variant: RenderedVariant,
    esp_recipients: Recipients,
) -> None:
    backend.send(esp_variant, esp_recipients(2))
    backend.send(esp_variant, esp_recipients(2, start=10))

    assert len({m.peer for m in smtp_server.messages}) == 1


def test_a_connection_the_server_dropped_is_reopened(
    backend: SmtpBackend,
    smtp_server: SmtpTestServer,
    esp_variant: RenderedVariant,
    esp_recipients: Recipients,
) -> None:
    backend.send(esp_variant, esp_recipients(1))
    smtp_server.restart()
    results = backend.send(esp_variant, esp_recipients(2, start=10))

    assert all(r.accepted for r in results)
    assert len(smtp_server.messages) == 3
    assert len({m.peer for m in smtp_server.messages}) == 2


def test_refused_recipients_are_reported_one_by_one_permanent_or_not(
    backend: SmtpBackend,
    smtp_server: SmtpTestServer,
    esp_variant: RenderedVariant,
    esp_recipients: Recipients,
) -> None:
    smtp_server.refuse(r"^reader2@", 550, "5.1.1 No such user")
    smtp_server.refuse(r"^reader3@", 451, "4.3.0 Try again later")

    results = {r.recipient.email: r for r in backend.send(esp_variant, esp_recipients(4))}

    assert results["reader1@example.org"].accepted and results["reader4@example.org"].accepted
    gone, busy = results["reader2@example.org"], results["reader3@example.org"]
    assert not gone.accepted and gone.permanent and "550" in gone.error
    assert not busy.accepted and not busy.permanent and "451" in busy.error
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == [
        "reader1@example.org",
        "reader4@example.org",
    ]


def test_a_server_offering_pipelining_gets_every_message_and_every_refusal_right(
    basic_settings: Settings, esp_variant: RenderedVariant, esp_recipients: Recipients
) -> None:
    from tests.fixtures_esp import SmtpTestServer

    server = SmtpTestServer(pipelining=True).start()
    backend = SmtpBackend(smtp_settings(basic_settings, server.port))
    try:
        server.refuse(r"^reader2@", 550, "5.1.1 No such user")
        results = {r.recipient.email: r for r in backend.send(esp_variant, esp_recipients(4))}
        conn = backend._local.conn
        assert conn is not None and conn.has_extn("pipelining")
    finally:
        backend.close()
        server.stop()

    refused = results.pop("reader2@example.org")
    assert not refused.accepted and refused.permanent and "550" in refused.error
    assert all(r.accepted for r in results.values())
    received = {m.rcpt_tos[0]: m.parsed() for m in server.messages}
    assert sorted(received) == sorted(results)
    for email, result in results.items():
        message = received[email]
        assert message["Message-ID"] == result.message_id and message["To"].addresses[0].addr_spec == email
        text = message.get_body(("plain",))
        assert text is not None and f"Dear {result.recipient.name}," in text.get_content()


def test_a_line_starting_with_a_dot_arrives_intact(
    backend: SmtpBackend,
    smtp_server: SmtpTestServer,
    esp_variant: RenderedVariant,
    esp_recipients: Recipients,
) -> None:
    from dataclasses import replace

    variant = replace(esp_variant, text=".hidden\n..two\n" + esp_variant.text)
    assert all(r.accepted for r in backend.send(variant, esp_recipients(2)))

    for message in smtp_server.parsed():
        text = message.get_body(("plain",))
        assert text is not None and text.get_content().startswith(".hidden\r\n..two\r\n")


def test_login_is_used_when_a_username_is_set(
    basic_settings: Settings,
    smtp_server: SmtpTestServer,
    esp_variant: RenderedVariant,
    esp_recipients: Recipients,
) -> None:
    good = SmtpBackend(
        smtp_settings(basic_settings, smtp_server.port, SMTP_USERNAME=USER, SMTP_PASSWORD=PASSWORD)
    )
    assert good.send(esp_variant, esp_recipients(1))[0].accepted
    good.close()

    bad = SmtpBackend(
        smtp_settings(basic_settings, smtp_server.port, SMTP_USERNAME=USER, SMTP_PASSWORD="wrong")
    )
    with pytest.raises(AuthFailed, match="login"):
        bad.send(esp_variant, esp_recipients(1))


def test_a_server_that_is_not_there_is_a_retryable_error(
    basic_settings: Settings, esp_variant: RenderedVariant, esp_recipients: Recipients
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    backend = SmtpBackend(smtp_settings(basic_settings, closed_port))
    with pytest.raises(RetryableError, match="cannot connect"):
        backend.send(esp_variant, esp_recipients(1))


def test_starttls_is_refused_loudly_by_a_server_without_it(
    basic_settings: Settings,
    smtp_server: SmtpTestServer,
    esp_variant: RenderedVariant,
    esp_recipients: Recipients,
) -> None:
    backend = SmtpBackend(smtp_settings(basic_settings, smtp_server.port, SMTP_STARTTLS=True))
    with pytest.raises(AuthFailed, match=r"STARTTLS|does not offer"):
        backend.send(esp_variant, esp_recipients(1))


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def test_starttls_and_login_against_a_server_that_requires_them(
    basic_settings: Settings, tmp_path: Path, esp_variant: RenderedVariant, esp_recipients: Recipients
) -> None:
    from tests.fixtures_esp import SmtpTestServer

    cert, key = _self_signed(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    server = SmtpTestServer(tls_context=server_context).start()
    try:
        settings = smtp_settings(
            basic_settings, server.port, SMTP_STARTTLS=True, SMTP_USERNAME=USER, SMTP_PASSWORD=PASSWORD
        )
        trusting = SmtpBackend(settings, ssl_context=ssl.create_default_context(cafile=str(cert)))
        assert trusting.send(esp_variant, esp_recipients(1))[0].accepted
        trusting.close()
        assert len(server.messages) == 1

        with pytest.raises(AuthFailed, match="certificate"):
            SmtpBackend(settings).send(esp_variant, esp_recipients(1))  # the system CAs do not know it
    finally:
        server.stop()


def test_the_factory_builds_the_smtp_backend(basic_settings: Settings, smtp_server: SmtpTestServer) -> None:
    backend = backend_for(smtp_settings(basic_settings, smtp_server.port))
    assert isinstance(backend, SmtpBackend) and backend.max_batch == basic_settings.BATCH_SIZE


# --- internationalised addresses -----------------------------------------------------------------
@pytest.fixture(params=[False, True], ids=["without-smtputf8", "with-smtputf8"])
def relay(
    basic_settings: Settings, request: pytest.FixtureRequest
) -> Iterator[tuple[SmtpTestServer, SmtpBackend]]:
    """An SMTP server with and without SMTPUTF8 (RFC 6531; many relays lack it), and a backend on it."""
    from tests.fixtures_esp import SmtpTestServer

    server = SmtpTestServer(smtputf8=request.param).start()
    backend = SmtpBackend(smtp_settings(basic_settings, server.port))
    yield server, backend
    backend.close()
    server.stop()


def test_a_recipient_at_an_internationalised_domain_is_on_the_envelope_in_ascii(
    relay: tuple[SmtpTestServer, SmtpBackend], esp_variant: RenderedVariant, esp_recipients: Recipients
) -> None:
    """carol@bücher.de goes through any relay as carol@xn--bcher-kva.de (IDNA 2008), in the envelope
    and the To: header alike; the body shows the address as she typed it."""
    server, backend = relay
    recipients = esp_recipients(3)
    recipients[1] = recipients[1]._replace(email="carol@bücher.de")

    batch = backend.send(esp_variant, recipients)  # a batch: the per-variant template
    alone = backend.send(esp_variant, recipients[1:2])  # one recipient: the message built whole

    assert all(r.accepted for r in batch + alone)
    assert [m.rcpt_tos for m in server.messages] == [
        ["reader1@example.org"],
        ["carol@xn--bcher-kva.de"],
        ["reader3@example.org"],
        ["carol@xn--bcher-kva.de"],
    ]
    for message in (server.parsed()[1], server.parsed()[3]):
        assert message["To"].addresses[0].addr_spec == "carol@xn--bcher-kva.de"
        text = message.get_body(("plain",))
        assert text is not None and "carol@bücher.de" in text.get_content()


def test_a_non_ascii_local_part_needs_smtputf8_and_without_it_only_that_recipient_is_refused(
    relay: tuple[SmtpTestServer, SmtpBackend], esp_variant: RenderedVariant, esp_recipients: Recipients
) -> None:
    """josé@ can only be written with SMTPUTF8. A server without it refuses him for good, alone: never a
    lost connection (that would hold back the whole bulletin as an outage, again and again)."""
    server, backend = relay
    recipients = esp_recipients(4)
    recipients[1] = recipients[1]._replace(email="josé@example.org")
    recipients[2] = recipients[2]._replace(email="josé@bücher.de")

    results = {r.recipient.email: r for r in backend.send(esp_variant, recipients)}

    delivered = [m.rcpt_tos[0] for m in server.messages]
    if server.smtputf8:
        assert all(r.accepted for r in results.values())
        assert delivered == [
            "reader1@example.org",
            "josé@example.org",
            "josé@xn--bcher-kva.de",
            "reader4@example.org",
        ]
        return
    assert results["reader1@example.org"].accepted and results["reader4@example.org"].accepted
    for refused in (results["josé@example.org"], results["josé@bücher.de"]):
        assert not refused.accepted and refused.permanent and "SMTPUTF8" in refused.error
    assert delivered == ["reader1@example.org", "reader4@example.org"]


def test_a_sender_needing_smtputf8_on_a_server_without_it_fails_the_batch_not_each_recipient(
    basic_settings: Settings, esp_variant: RenderedVariant, esp_recipients: Recipients
) -> None:
    """Every recipient would be refused the same way: the configuration's fault, so `AuthFailed` (the
    bulletin is paused with the reason), not thousands of permanently failed subscribers."""
    from tests.fixtures_esp import SmtpTestServer

    server = SmtpTestServer(smtputf8=False).start()
    backend = SmtpBackend(smtp_settings(basic_settings, server.port, FROM_EMAIL="gebet@bücher.de"))
    try:
        assert all(
            r.accepted for r in backend.send(esp_variant, esp_recipients(2))
        )  # the domain alone is fine
        backend.close()
        backend = SmtpBackend(smtp_settings(basic_settings, server.port, FROM_EMAIL="gebét@example.org"))
        with pytest.raises(AuthFailed, match="SMTPUTF8"):
            backend.send(esp_variant, esp_recipients(2))
    finally:
        backend.close()
        server.stop()
    assert [m.mail_from for m in server.messages] == ["gebet@xn--bcher-kva.de"] * 2
