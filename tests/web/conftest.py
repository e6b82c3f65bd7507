"""Web tests: the FastAPI app on a real uvicorn (`live_server`, from tests/fixtures_web.py), spoken to
over HTTP with httpx, on both databases. `signer` and `server` give a live app that trusts a webhook
signing key of the test's own (tests/web/signing.py signs like SendGrid)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from newsletter.core.config import Settings
from tests.fixtures_web import LiveServer, start_live_server
from tests.web.signing import Signer


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer()


@pytest.fixture
def server(settings: Settings, signer: Signer) -> Iterator[LiveServer]:
    with start_live_server(
        settings.model_copy(update={"SENDGRID_WEBHOOK_PUBLIC_KEY": signer.public_base64})
    ) as live:
        yield live
