"""The outbox backend: one complete `.eml` per recipient, read back with the standard parser."""

from __future__ import annotations

from collections.abc import Callable
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import pytest

from newsletter.content.types import Recipient, RenderedVariant
from newsletter.core.config import Settings
from newsletter.esp.base import RetryableError
from newsletter.esp.outbox import OutboxBackend
from tests.fixtures_esp import unsubscribe_url_of


@pytest.fixture
def outbox_settings(basic_settings: Settings, tmp_path: Path) -> Settings:
    return basic_settings.model_copy(update={"OUTBOX_DIR": tmp_path / "outbox", "ESP_BACKEND": "outbox"})


def read(path: Path) -> EmailMessage:
    message: EmailMessage = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
    return message


def test_each_recipient_becomes_one_eml_file_named_by_delivery_under_the_bulletin(
    outbox_settings: Settings, esp_variant: RenderedVariant, esp_recipients: Callable[..., list[Recipient]]
) -> None:
    recipients = esp_recipients(3)
    results = OutboxBackend(outbox_settings).send(esp_variant, recipients)

    folder = outbox_settings.OUTBOX_DIR / "bulletin-7"
    assert sorted(p.name for p in folder.iterdir()) == ["1001.eml", "1002.eml", "1003.eml"]
    assert all(r.accepted for r in results)
    for result in results:
        message = read(folder / f"{result.recipient.delivery_id}.eml")
        assert message["Message-ID"] == result.message_id


def test_the_file_is_the_complete_personalised_message(
    outbox_settings: Settings, esp_variant: RenderedVariant
) -> None:
    reader = Recipient("ada@example.org", "Ada <Lovelace>", subscriber_id=3, delivery_id=42, bulletin_id=7)
    OutboxBackend(outbox_settings).send(esp_variant, [reader])

    message = read(outbox_settings.OUTBOX_DIR / "bulletin-7" / "42.eml")
    unsubscribe_url = unsubscribe_url_of(message, outbox_settings, reader)
    assert message["To"].addresses[0].addr_spec == "ada@example.org"
    assert message["Subject"] == esp_variant.subject
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    assert "Dear Ada <Lovelace>," in text.get_content()
    assert "Dear Ada &lt;Lovelace&gt;," in html.get_content()
    assert unsubscribe_url in html.get_content()
    assert "~nl" not in text.get_content() + html.get_content()


def test_sending_again_rewrites_the_same_file_and_leaves_no_temporary_files(
    outbox_settings: Settings, esp_variant: RenderedVariant, esp_recipients: Callable[..., list[Recipient]]
) -> None:
    backend = OutboxBackend(outbox_settings)
    backend.send(esp_variant, esp_recipients(2))
    backend.send(esp_variant, esp_recipients(2))

    names = sorted(p.name for p in (outbox_settings.OUTBOX_DIR / "bulletin-7").iterdir())
    assert names == ["1001.eml", "1002.eml"]


def test_messages_without_a_delivery_go_to_the_direct_folder(
    outbox_settings: Settings, esp_variant: RenderedVariant
) -> None:
    staff = [
        Recipient("staff@example.org", "Staff", subscriber_id=None),
        Recipient("s2@example.org", "", None),
    ]
    results = OutboxBackend(outbox_settings).send(esp_variant, staff)

    files = sorted((outbox_settings.OUTBOX_DIR / "direct").glob("*.eml"))
    assert len(files) == 2
    assert {read(f)["Message-ID"] for f in files} == {r.message_id for r in results}


def test_an_unwritable_outbox_is_a_retryable_error(
    basic_settings: Settings,
    tmp_path: Path,
    esp_variant: RenderedVariant,
    esp_recipients: Callable[..., list[Recipient]],
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the outbox should be")
    backend = OutboxBackend(basic_settings.model_copy(update={"OUTBOX_DIR": blocker}))
    with pytest.raises(RetryableError, match="cannot write"):
        backend.send(esp_variant, esp_recipients(1))
