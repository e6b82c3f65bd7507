"""Hypothesis-driven fuzz of every public endpoint and the webhook, over HTTP against the real app:
arbitrary paths, tokens, forms and bodies. Nothing may answer 500, and nothing may change without a
valid credential (the one anonymous write, `POST /subscribe`, is checked separately: it may add a
pending subscriber and nothing else).

The schema comes from the app's own OpenAPI document, switched on for this test only
(`create_app(..., openapi=True)`); the generator adds paths outside it and raw bodies.
"""

from __future__ import annotations

import string
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from newsletter.core.config import Settings
from newsletter.web.app import create_app
from tests.factories import MakeSubscriber
from tests.fixtures_web import LiveServer, start_live_server
from tests.web.signing import Signer
from tests.web.test_security import state

FIELDS = [
    "email",
    "name",
    "regions",
    "website",
    "action",
    "weeks",
    "confirm_erase",
    "List-Unsubscribe",
    "csrf_token",
]
TOKENISH = st.one_of(
    st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=38, max_size=42),
    st.text(max_size=80).map(lambda t: quote(t, safe="")),
)
NUMBER = st.one_of(
    st.integers(-(2**70), 2**70).map(str), st.text(max_size=12).map(lambda t: quote(t, safe=""))
)


@st.composite
def paths(draw: st.DrawFn, schema_paths: list[str]) -> str:
    template = draw(
        st.sampled_from([*schema_paths, "/webhooks/sendgrid", "/{junk}", "/admin/{junk}", "/static/{junk}"])
    )
    path = template
    for name in ("token", "bulletin_id", "junk", "user_id", "subscriber_id"):
        if "{" + name + "}" in path:
            value = draw(
                NUMBER
                if name.endswith("_id")
                else TOKENISH
                if name == "token"
                else st.text(max_size=30).map(lambda t: quote(t))
            )
            path = path.replace("{" + name + "}", value)
    return path


forms = st.dictionaries(
    st.sampled_from(FIELDS),
    st.one_of(st.text(max_size=200), st.lists(st.text(max_size=20), max_size=3)),
    max_size=6,
)
bodies = st.one_of(
    st.binary(max_size=2000),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    ).map(lambda v: __import__("json").dumps(v).encode()),
)


@pytest.fixture
def fuzzed(
    settings: Settings, make_subscriber: MakeSubscriber
) -> Iterator[tuple[LiveServer, list[str], Signer]]:
    make_subscriber("ada@example.org", regions=["africa"])
    signer = Signer()
    configured = settings.model_copy(update={"SENDGRID_WEBHOOK_PUBLIC_KEY": signer.public_base64})
    app = create_app(configured, openapi=True)
    schema = app.openapi()
    app.state.engine.dispose()  # the schema is all this app is for: close the connection it opened
    schema_paths = sorted(p for p in schema["paths"] if not p.startswith("/admin"))
    assert "/preferences/{token}" in schema_paths and "/my-data/{token}" in schema_paths
    with start_live_server(configured) as server:
        yield server, schema_paths, signer


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_no_request_without_a_credential_fails_or_changes_anything(
    fuzzed, engine: Engine, data: st.DataObject
) -> None:
    server, schema_paths, signer = fuzzed
    method = data.draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD"]))
    path = data.draw(paths(schema_paths))
    kind = data.draw(st.sampled_from(["form", "multipart", "raw", "signed webhook"]))
    before = state(engine)
    request: dict[str, object] = {}
    if kind == "form":
        request["data"] = data.draw(forms)
    elif kind == "multipart":
        request["files"] = {k: (None, str(v)) for k, v in data.draw(forms).items()}
    else:
        body = data.draw(bodies)
        request["content"] = body
        if kind == "signed webhook":
            path = "/webhooks/sendgrid"
            request["headers"] = signer.headers(body)
    try:
        answer = server.client.request(method, path, **request)  # type: ignore[arg-type]
    except httpx.InvalidURL:
        return
    assert answer.status_code < 500, (method, path, answer.status_code, answer.text[:300])
    if kind == "signed webhook" or (method == "POST" and path.split("?")[0] == "/subscribe"):
        return  # a signed webhook is a credential; subscribing is the one anonymous write
    assert state(engine) == before, (method, path)
