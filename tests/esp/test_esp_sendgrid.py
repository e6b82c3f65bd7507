"""The SendGrid backend, through the official library, against the fake SendGrid over real HTTP."""

from __future__ import annotations

import dataclasses
import email.header
import email.utils
import html
import json
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from newsletter.content.types import Recipient, RenderedVariant
from newsletter.core.config import Settings
from newsletter.core.errors import ConfigError
from newsletter.esp import backend_for
from newsletter.esp.base import AuthFailed, BadRequest, RateLimited, RetryableError
from newsletter.esp.sendgrid import send as sendgrid_send
from newsletter.esp.sendgrid.send import MIN_RATE_LIMIT_WAIT, SendGridBackend, _error_for
from newsletter.mail.links import Links
from newsletter.testing.fake_esp import FakeEsp

Recipients = Callable[..., list[Recipient]]


@pytest.fixture
def sg_settings(basic_settings: Settings, fake_esp: FakeEsp) -> Settings:
    return basic_settings.model_copy(
        update={
            "ESP_BACKEND": "sendgrid",
            "SENDGRID_API_KEY": fake_esp.api_key,
            "SENDGRID_HOST": fake_esp.url,
            "SENDGRID_TIMEOUT": 5.0,
            "UNSUBSCRIBE_MAILTO": "unsubscribe@example.org",
            "REPLY_TO": "office@example.org",
        }
    )


@pytest.fixture
def backend(sg_settings: Settings) -> SendGridBackend:
    return SendGridBackend(sg_settings)


# --- the success path -----------------------------------------------------------------------------
def test_one_post_accepts_the_whole_batch_under_the_message_id_sendgrid_gives(
    backend: SendGridBackend, fake_esp: FakeEsp, esp_variant: RenderedVariant, esp_recipients: Recipients
) -> None:
    recipients = esp_recipients(3)

    results = backend.send(esp_variant, recipients)

    requests = fake_esp.requests()
    assert len(requests) == 1 and requests[0].personalizations == 3
    assert [r.recipient for r in results] == recipients
    assert all(r.accepted for r in results)
    assert {r.message_id for r in results} == {requests[0].message_id}


def test_each_recipient_gets_their_own_to_values_unsubscribe_headers_and_delivery_ids(
    backend: SendGridBackend,
    sg_settings: Settings,
    fake_esp: FakeEsp,
    esp_variant: RenderedVariant,
    esp_recipients: Recipients,
) -> None:
    recipients = esp_recipients(2)
    backend.send(esp_variant, recipients)

    links = Links(sg_settings)
    for recipient, got in zip(recipients, fake_esp.accepted(), strict=True):
        values = links.values(recipient)
        assert (got.email, got.name) == (recipient.email, recipient.name)
        assert got.custom_args == {"delivery_id": str(recipient.delivery_id), "bulletin_id": "7"}
        assert got.subject == esp_variant.subject
        for field, placeholder in esp_variant.text_placeholders.items():
            assert got.substitutions[placeholder] == values[field]
        for field, placeholder in esp_variant.html_placeholders.items():
            assert got.substitutions[placeholder] == html.escape(values[field])
        assert got.headers == {
            "List-Unsubscribe": f"<{values['unsubscribe_url']}>, <{values['unsubscribe_mailto']}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        }


def test_the_shared_parts_are_sent_once_with_text_before_html_and_a_list_id(
    backend: SendGridBackend, esp_variant: RenderedVariant, esp_recipients: Recipients
) -> None:
    body, refused = backend.body(esp_variant, esp_recipients(2))
    payload = json.loads(body)

    assert refused == []
    assert [c["type"] for c in payload["content"]] == ["text/plain", "text/html"]
    assert payload["content"][0]["value"] == esp_variant.text
    assert payload["content"][1]["value"] == esp_variant.html
    assert payload["from"] == {"email": "bulletin@example.org", "name": "Prayer Bulletin"}
    assert payload["reply_to"] == {"email": "office@example.org"}
    assert payload["subject"] == esp_variant.subject
    assert payload["headers"]["List-Id"].endswith("<prayer-bulletin.example.org>")


def test_names_with_markup_and_non_ascii_letters_arrive_escaped_in_html_and_raw_in_text(
    backend: SendGridBackend, fake_esp: FakeEsp, esp_variant: RenderedVariant
) -> None:
    reader = Recipient("zoe@example.org", 'Zoë "<b>" & Ñandú', subscriber_id=5, delivery_id=55, bulletin_id=7)
    backend.send(esp_variant, [reader])

    got = fake_esp.accepted()[0]
    assert got.name == reader.name
    assert got.substitutions[esp_variant.text_placeholders["name"]] == reader.name
    assert got.substitutions[esp_variant.html_placeholders["name"]] == html.escape(reader.name)


def test_a_confirmation_email_carries_no_list_headers(
    backend: SendGridBackend, fake_esp: FakeEsp, esp_variant: RenderedVariant
) -> None:
    from dataclasses import replace

    confirmation = replace(esp_variant, regions=(), key="confirmation", bulletin_id=None)
    backend.send(confirmation, [Recipient("new@example.org", "New", subscriber_id=9)])

    got = fake_esp.accepted()[0]
    assert got.headers == {} and got.custom_args == {}
    assert "headers" not in json.loads(backend.body(confirmation, [Recipient("n@example.org", "", 1)])[0])


def test_a_full_batch_of_1000_is_one_request_and_1001_is_refused_before_sending(
    backend: SendGridBackend, fake_esp: FakeEsp, esp_variant: RenderedVariant, esp_recipients: Recipients
) -> None:
    assert backend.max_batch == 1000
    results = backend.send(esp_variant, esp_recipients(1000))
    assert len(results) == 1000 and all(r.accepted for r in results)
    assert fake_esp.stats()["requests"] == 1 and fake_esp.stats()["unique_delivery_ids"] == 1000

    with pytest.raises(ValueError, match="1000"):
        backend.send(esp_variant, esp_recipients(1001))


def test_a_recipient_whose_values_exceed_sendgrids_limit_is_refused_alone(
    backend: SendGridBackend, fake_esp: FakeEsp, esp_variant: RenderedVariant, esp_recipients: Recipients
) -> None:
    giant = Recipient("giant@example.org", "G" * 6000, subscriber_id=99, delivery_id=99, bulletin_id=7)
    others = esp_recipients(2)

    results = {r.recipient.email: r for r in backend.send(esp_variant, [others[0], giant, others[1]])}

    assert not results["giant@example.org"].accepted and results["giant@example.org"].permanent
    assert "10000" in results["giant@example.org"].error
    assert all(results[r.email].accepted for r in others)
    assert [r.email for r in fake_esp.accepted()] == [r.email for r in others]


def test_threads_each_use_their_own_client(
    backend: SendGridBackend, fake_esp: FakeEsp, esp_variant: RenderedVariant, esp_recipients: Recipients
) -> None:
    clients: list[object] = []
    errors: list[BaseException] = []

    def work(start: int) -> None:
        try:
            backend.send(esp_variant, esp_recipients(50, start=start))
            clients.append(backend._client())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i * 100,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert len({id(c) for c in clients}) == 4
    assert fake_esp.stats()["unique_delivery_ids"] == 200


# --- how failures map ------------------------------------------------------------------------------
def test_a_400_is_a_bad_request_carrying_sendgrids_messages(
    backend: SendGridBackend, fake_esp: FakeEsp, esp_variant: RenderedVariant, esp_recipients: Recipients
) -> None:
    fake_esp.reject_addresses(r"^reader2@")
    with pytest.raises(
        BadRequest, match=r"personalizations\.1\.to\.0\.email: Does not contain a valid address"
    ):
        backend.send(esp_variant, esp_recipients(3))
    assert fake_esp.accepted() == []


@pytest.mark.parametrize("status", [401, 403])
def test_401_and_403_mean_the_key_is_refused(
    backend: SendGridBackend,
    fake_esp: FakeEsp,
    esp_variant: RenderedVariant,
    esp_recipients: Recipients,
    status: int,
) -> None:
    fake_esp.fail(status)
    with pytest.raises(AuthFailed, match=str(status)):
        backend.send(esp_variant, esp_recipients(1))


def test_a_wrong_api_key_is_an_auth_failure(
    sg_settings: Settings, esp_variant: RenderedVariant, esp_recipients: Recipients
) -> None:
    backend = SendGridBackend(sg_settings.model_copy(update={"SENDGRID_API_KEY": "SG.wrong"}))
    with pytest.raises(AuthFailed):
        backend.send(esp_variant, esp_recipients(1))


def test_a_429_is_rate_limited_until_the_reset_time(
    backend: SendGridBackend, fake_esp: FakeEsp, esp_variant: RenderedVariant, esp_recipients: Recipients
) -> None:
    fake_esp.configure(rate_limit_reset=5)
    fake_esp.fail(429)
    with pytest.raises(RateLimited) as caught:
        backend.send(esp_variant, esp_recipients(1))
    assert caught.value.retry_after is not None
    assert 3.5 <= caught.value.retry_after <= 6.5


def test_a_429_without_a_reset_header_leaves_the_wait_to_the_caller() -> None:
    error = _error_for(429, b'{"errors":[{"message":"too many requests","field":null}]}', {})
    assert isinstance(error, RateLimited) and error.retry_after is None


def test_a_429_always_waits_the_later_header_and_never_zero() -> None:
    """SendGrid's reset is a time on its own clock: one already past here (clocks differ) must not turn
    into an immediate retry against an endpoint that refuses everything until its period ends."""
    now = time.time()
    past = _error_for(429, b"", {"X-RateLimit-Reset": str(int(now) - 30)})
    assert isinstance(past, RateLimited) and past.retry_after == MIN_RATE_LIMIT_WAIT
    both = _error_for(429, b"", {"X-RateLimit-Reset": str(now + 2), "Retry-After": "7"})
    assert isinstance(both, RateLimited) and both.retry_after == pytest.approx(7.0)
    later_reset = _error_for(429, b"", {"X-RateLimit-Reset": str(now + 9), "Retry-After": "3"})
    assert isinstance(later_reset, RateLimited) and later_reset.retry_after == pytest.approx(9.0, abs=1.0)
    nonsense = _error_for(429, b"", {"X-RateLimit-Reset": "inf", "Retry-After": "soon"})
    assert isinstance(nonsense, RateLimited) and nonsense.retry_after is None


def test_a_413_splits_a_batch_whose_halves_fit_even_when_the_bulletin_is_most_of_the_request(
    backend: SendGridBackend, fake_esp: FakeEsp, esp_variant: RenderedVariant, esp_recipients: Recipients
) -> None:
    """The shared content (subject, both parts, sender) being most of a request says nothing about
    whether fewer recipients fit: while it fits by itself, a 413 splits the batch, and each half that
    fits goes out once."""
    variant = dataclasses.replace(esp_variant, html=esp_variant.html + "x" * 200_000)
    recipients = esp_recipients(100)
    full, half = (len(backend.body(variant, r)[0]) for r in (recipients, recipients[:50]))
    assert 2 * len(backend._prepared(variant).tail) >= full, "the bulletin is most of the request"
    fake_esp.configure(max_body_bytes=(full + half) // 2)

    with pytest.raises(BadRequest) as whole:
        backend.send(variant, recipients)
    assert not whole.value.blames_request, "half the batch fits: split it, do not pause the send"
    results = backend.send(variant, recipients[:50]) + backend.send(variant, recipients[50:])

    assert all(r.accepted for r in results)
    assert sorted(a.delivery_id for a in fake_esp.accepted()) == sorted(
        str(r.delivery_id) for r in recipients
    ), "everyone exactly once"
    assert [r.outcome for r in fake_esp.requests()] == ["413", "202", "202"]


def test_a_413_for_a_single_recipient_blames_the_bulletin(
    backend: SendGridBackend, fake_esp: FakeEsp, esp_variant: RenderedVariant, esp_recipients: Recipients
) -> None:
    """Nobody is failed for the bulletin's size: the error blames the request, which pauses the send."""
    one = esp_recipients(1)
    fake_esp.configure(max_body_bytes=len(backend.body(esp_variant, one)[0]) - 1)
    with pytest.raises(BadRequest) as exc:
        backend.send(esp_variant, one)
    assert exc.value.blames_request and "too large" in str(exc.value) and "shorten it" in str(exc.value)
    assert fake_esp.accepted() == []


def test_a_413_blames_at_once_a_bulletin_whose_shared_part_alone_is_over_sendgrids_limit(
    backend: SendGridBackend,
    fake_esp: FakeEsp,
    esp_variant: RenderedVariant,
    esp_recipients: Recipients,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No request can fit then, whatever its recipients: one request, not log2(batch) of them.
    (SendGrid's limit is taken down to 100 kB here, in the backend and the fake alike.)"""
    monkeypatch.setattr(sendgrid_send, "MAX_BODY_BYTES", 100_000)
    fake_esp.configure(max_body_bytes=100_000)
    variant = dataclasses.replace(esp_variant, html=esp_variant.html + "x" * 100_000)
    with pytest.raises(BadRequest) as exc:
        backend.send(variant, esp_recipients(1000))
    assert exc.value.blames_request and "too large" in str(exc.value)
    assert [r.outcome for r in fake_esp.requests()] == ["413"]


def test_the_fake_refuses_bodies_over_the_limit_the_backend_knows() -> None:
    assert FakeEsp().config()["max_body_bytes"] == sendgrid_send.MAX_BODY_BYTES


@pytest.mark.parametrize("name", ["Doe, Jane", "Smith; Bob", 'O"Neil, Pat \\ Co'])
def test_a_name_with_a_comma_or_semicolon_goes_out_quoted(
    backend: SendGridBackend,
    fake_esp: FakeEsp,
    esp_variant: RenderedVariant,
    esp_recipients: Recipients,
    name: str,
) -> None:
    """SendGrid would read it as a list of addresses, answer 202 and drop the message."""
    recipients = [r._replace(name=name) for r in esp_recipients(2)]
    recipients[1] = recipients[1]._replace(delivery_id=None)  # the slow path too
    body, refused = backend.body(esp_variant, recipients)
    assert refused == []
    names = [p["to"][0]["name"] for p in json.loads(body)["personalizations"]]
    assert names[0] == names[1] and names[0].startswith('"') and names[0].endswith('"')
    assert email.utils.parseaddr(f"{names[0]} <a@example.org>") == (name, "a@example.org")
    assert all(r.accepted for r in backend.send(esp_variant, recipients))
    # The greeting in the body keeps the name as written: only the header form is quoted.
    subs = json.loads(body)["personalizations"][0]["substitutions"]
    assert name in subs.values()


def test_an_internationalised_domain_goes_to_sendgrid_in_its_ascii_form_and_reads_as_typed(
    backend: SendGridBackend, fake_esp: FakeEsp, esp_variant: RenderedVariant, esp_recipients: Recipients
) -> None:
    """DNS and ESP APIs take a domain in its ASCII form (IDNA 2008); the reader sees the address they
    subscribed with."""
    recipients = esp_recipients(2)
    recipients[1] = recipients[1]._replace(email="ulf@straße.de")
    body, refused = backend.body(esp_variant, recipients)
    assert refused == []
    second = json.loads(body)["personalizations"][1]
    assert second["to"][0]["email"] == "ulf@xn--strae-oqa.de"
    assert "ulf@straße.de" in second["substitutions"].values()
    assert all(r.accepted for r in backend.send(esp_variant, recipients))


def test_a_non_ascii_organisation_name_goes_out_as_encoded_words_in_list_id(
    sg_settings: Settings, fake_esp: FakeEsp, esp_variant: RenderedVariant, esp_recipients: Recipients
) -> None:
    backend = SendGridBackend(sg_settings.model_copy(update={"ORG_NAME": "Église Évangélique — Prière"}))
    body, _ = backend.body(esp_variant, esp_recipients(1))
    list_id = json.loads(body)["headers"]["List-Id"]
    assert list_id.isascii()
    assert str(email.header.make_header(email.header.decode_header(list_id))).startswith(
        "Église Évangélique — Prière <"
    )
    assert all(r.accepted for r in backend.send(esp_variant, esp_recipients(1)))


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_are_retryable(
    backend: SendGridBackend,
    fake_esp: FakeEsp,
    esp_variant: RenderedVariant,
    esp_recipients: Recipients,
    status: int,
) -> None:
    fake_esp.fail(status)
    with pytest.raises(RetryableError, match=str(status)) as caught:
        backend.send(esp_variant, esp_recipients(1))
    assert not isinstance(caught.value, RateLimited)


def test_an_answer_slower_than_the_timeout_is_retryable_and_nothing_was_accepted(
    sg_settings: Settings, fake_esp: FakeEsp, esp_variant: RenderedVariant, esp_recipients: Recipients
) -> None:
    backend = SendGridBackend(sg_settings.model_copy(update={"SENDGRID_TIMEOUT": 0.3}))
    fake_esp.slow(1.0, count=1)
    started = time.monotonic()
    with pytest.raises(RetryableError, match=r"did not answer within 0\.3s"):
        backend.send(esp_variant, esp_recipients(2))
    assert time.monotonic() - started < 0.9
    time.sleep(0.9)
    assert fake_esp.accepted() == []
    assert backend.send(esp_variant, esp_recipients(2))[0].accepted  # and the next try goes through


@pytest.mark.parametrize("after_accept", [False, True])
def test_a_dropped_connection_is_retryable(
    backend: SendGridBackend,
    fake_esp: FakeEsp,
    esp_variant: RenderedVariant,
    esp_recipients: Recipients,
    after_accept: bool,
) -> None:
    fake_esp.drop(count=1, after_accept=after_accept)
    with pytest.raises(RetryableError, match="connection"):
        backend.send(esp_variant, esp_recipients(2))
    assert len(fake_esp.accepted()) == (2 if after_accept else 0)


def test_a_refused_connection_is_retryable(
    sg_settings: Settings, esp_variant: RenderedVariant, esp_recipients: Recipients
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    backend = SendGridBackend(
        sg_settings.model_copy(update={"SENDGRID_HOST": f"http://127.0.0.1:{closed_port}"})
    )
    with pytest.raises(RetryableError, match="ConnectionRefusedError"):
        backend.send(esp_variant, esp_recipients(1))


def test_a_wrong_host_path_pauses_rather_than_retries() -> None:
    assert isinstance(_error_for(404, b"not found", {}), AuthFailed)


# --- choosing the backend -----------------------------------------------------------------------------
def test_the_factory_chooses_by_settings(basic_settings: Settings, tmp_path: Any) -> None:
    def chosen(**update: Any) -> tuple[str, int]:
        backend = backend_for(basic_settings.model_copy(update=update))
        return backend.name, backend.max_batch

    assert chosen() == ("outbox", basic_settings.BATCH_SIZE)
    assert chosen(SENDGRID_API_KEY="SG.x") == ("sendgrid", 1000)
    assert chosen(SMTP_HOST="127.0.0.1", BATCH_SIZE=200) == ("smtp", 200)
    assert chosen(ESP_BACKEND="outbox", SENDGRID_API_KEY="SG.x") == ("outbox", basic_settings.BATCH_SIZE)
    with pytest.raises(ConfigError, match="SENDGRID_API_KEY"):
        backend_for(basic_settings.model_copy(update={"ESP_BACKEND": "sendgrid"}))
    with pytest.raises(ConfigError, match="SMTP_HOST"):
        backend_for(basic_settings.model_copy(update={"ESP_BACKEND": "smtp"}))


def test_a_rendered_bulletin_goes_out_with_every_placeholder_substituted(
    backend: SendGridBackend, sg_settings: Settings, fake_esp: FakeEsp, sample_text: str
) -> None:
    """The renderer's placeholders (Markup, a str subclass) travel as substitution keys."""
    from newsletter.content.bulletins import parse_bulletin
    from newsletter.content.render import Renderer

    content = parse_bulletin(sample_text, sg_settings)
    variant = Renderer(sg_settings).variant(content, ["africa", "global"])
    recipient = Recipient("lucia@example.org", "Lucía <O'Neil>", 5, delivery_id=11, bulletin_id=3)

    [result] = backend.send(variant, [recipient])

    assert result.accepted
    [record] = fake_esp.accepted()
    placeholders = {*variant.html_placeholders.values(), *variant.text_placeholders.values()}
    assert set(record.substitutions) == placeholders
    assert html.escape("Lucía <O'Neil>") in record.substitutions.values()
    assert record.custom_args == {"delivery_id": "11", "bulletin_id": "3"}
