"""TRACK_OPENS and TRACK_CLICKS become SendGrid's `tracking_settings` in every Mail Send request
(off unless turned on; never for a confirmation), and SendGrid (here, the fake) accepts the body."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from newsletter.content.render import Renderer
from newsletter.content.types import Recipient, RenderedVariant
from newsletter.core.config import Settings
from newsletter.esp.sendgrid.send import SendGridBackend
from newsletter.testing.fake_esp import FakeEsp, validate_mail_send


def sendgrid(basic_settings: Settings, fake_esp: FakeEsp, **tracking: bool) -> SendGridBackend:
    return SendGridBackend(
        basic_settings.model_copy(
            update={"SENDGRID_API_KEY": fake_esp.api_key, "SENDGRID_HOST": fake_esp.url, **tracking}
        )
    )


@pytest.mark.parametrize(("opens", "clicks"), [(False, False), (True, False), (False, True), (True, True)])
def test_every_bulletin_request_carries_the_tracking_settings(
    basic_settings: Settings,
    fake_esp: FakeEsp,
    esp_variant: RenderedVariant,
    esp_recipients: Callable[..., list[Recipient]],
    opens: bool,
    clicks: bool,
):
    backend = sendgrid(basic_settings, fake_esp, TRACK_OPENS=opens, TRACK_CLICKS=clicks)
    for recipients in (esp_recipients(2), esp_recipients(1, start=5)):
        body, refused = backend.body(esp_variant, recipients)
        data = json.loads(body)
        assert refused == [] and validate_mail_send(data) == []
        assert data["tracking_settings"] == {
            "click_tracking": {"enable": clicks, "enable_text": False},
            "open_tracking": {"enable": opens},
            # Never SendGrid's own unsubscribe footer or analytics tags, whatever the account says.
            "subscription_tracking": {"enable": False},
            "ganalytics": {"enable": False},
        }
    assert all(r.accepted for r in backend.send(esp_variant, esp_recipients(3)))


def test_the_defaults_track_nothing_and_confirmations_are_never_tracked(
    basic_settings: Settings, fake_esp: FakeEsp
):
    assert (basic_settings.TRACK_OPENS, basic_settings.TRACK_CLICKS) == (False, False)
    backend = sendgrid(basic_settings, fake_esp, TRACK_OPENS=True, TRACK_CLICKS=True)
    confirmation = Renderer(backend.settings).confirmation("ann@example.org", "Ann")
    body, _ = backend.body(confirmation, [Recipient("ann@example.org", "Ann", 1)])
    settings = json.loads(body)["tracking_settings"]
    assert settings["open_tracking"]["enable"] is False and settings["click_tracking"]["enable"] is False
