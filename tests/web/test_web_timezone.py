"""The subscriber's time zone on the public pages: the subscribe form's hidden field (filled by a script,
the default without it) and the preference centre."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.engine import Engine

from newsletter.core.config import Settings
from newsletter.mail.tokens import Purpose
from tests.factories import MakeSubscriber
from tests.fixtures_web import LiveServer
from tests.web.test_web_public import subscriber, token_for


def post_subscribe(server: LiveServer) -> Callable[..., object]:
    def post(email: str, **extra: str) -> object:
        return server.client.post("/subscribe", data={"email": email, "regions": ["africa"], **extra})

    return post


def test_the_form_carries_a_hidden_zone_field_and_its_script(live_server: LiveServer) -> None:
    form = live_server.client.get("/subscribe").text
    assert '<input id="nl-timezone" name="timezone" type="hidden" value="">' in form
    assert '<script src="/static/timezone.js" defer></script>' in form
    embed = live_server.client.get("/subscribe/embed").text
    assert "/static/timezone.js&#34; defer" in embed or "http://127.0.0.1:8000/static/timezone.js" in embed
    script = live_server.client.get("/static/timezone.js")
    assert script.status_code == 200 and "resolvedOptions().timeZone" in script.text


def test_the_browser_zone_is_stored_and_without_one_the_default_applies(
    settings: Settings, engine: Engine, live_server: LiveServer
) -> None:
    post = post_subscribe(live_server)
    post("manila@example.org", timezone="Asia/Manila")
    post("nojs@example.org")
    post("odd@example.org", timezone="Not/AZone")
    zones = {
        email: getattr(subscriber(engine, f"{email}@example.org"), "timezone", "?")
        for email in ("manila", "nojs", "odd")
    }
    assert zones == {"manila": "Asia/Manila", "nojs": settings.TIMEZONE, "odd": settings.TIMEZONE}


def test_the_preference_centre_changes_the_zone(
    settings: Settings, engine: Engine, live_server: LiveServer, make_subscriber: MakeSubscriber
) -> None:
    ada = make_subscriber("ada@example.org")
    assert ada.id is not None
    url = f"/preferences/{token_for(settings, ada, Purpose.PREFERENCES)}"
    page = live_server.client.get(url).text
    assert f'<option value="{settings.TIMEZONE}" selected>{settings.TIMEZONE}</option>' in page
    bad = live_server.client.post(url, data={"action": "timezone", "timezone": "Atlantis"})
    assert bad.status_code == 400 and "unknown time zone" in bad.text
    saved = live_server.client.post(url, data={"action": "timezone", "timezone": "Pacific/Kiritimati"})
    assert saved.status_code == 200 and "Your time zone is saved" in saved.text
    assert '<option value="Pacific/Kiritimati" selected>Pacific/Kiritimati</option>' in saved.text
    assert getattr(subscriber(engine, "ada@example.org"), "timezone", None) == "Pacific/Kiritimati"
