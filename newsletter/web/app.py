"""The FastAPI application factory.

`create_app(settings)` builds one app around one engine; `newsletter web` serves it with uvicorn and
`newsletter run` serves it beside the scheduler. Pages are rendered on the server from
`templates/web/` with autoescaping; there is no front-end build.

Around the routes, outermost first: the signed session, the body caps (`web.limits`, which read the
session to refuse anonymous admin uploads unread) and the security headers (`web.headers`). The OpenAPI
schema is off: `openapi=True` turns it on for the fuzz tests only.
"""

from __future__ import annotations

import logging

import jinja2
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DataError

from newsletter.audience.credentials import BadLink
from newsletter.core.config import Settings
from newsletter.core.db import open_engine
from newsletter.web import admin, archive, feeds, public, webhooks
from newsletter.web.background import InFlight
from newsletter.web.headers import SecurityHeaders, redact_tokens_in_access_log
from newsletter.web.limits import BodyLimit

log = logging.getLogger(__name__)


def _out_of_range(request: Request, exc: Exception) -> Response:
    """A number no column can hold (an id beyond 64 bits) names nothing: a clean 400, not a 500."""
    log.info("refused %s %s: %s", request.method, request.url.path, type(exc).__name__)
    return PlainTextResponse("A number in this request is out of range.", status_code=400)


def create_app(settings: Settings, engine: Engine | None = None, *, openapi: bool = False) -> FastAPI:
    app = FastAPI(
        title="newsletter", docs_url=None, redoc_url=None, openapi_url="/openapi.json" if openapi else None
    )
    app.state.settings = settings
    app.state.engine = engine or open_engine(settings.DATABASE_URL)
    app.state.background = InFlight()
    app.state.webhook_slots = webhooks.BodySlots()
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(settings.templates_dir / "web")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    app.state.templates = Jinja2Templates(env=env)
    static = settings.templates_dir / "web" / "static"
    if static.is_dir():
        app.mount("/static", StaticFiles(directory=str(static)), name="static")

    # Middleware added last runs first: the session must be decoded before the body caps look at it.
    app.add_middleware(SecurityHeaders, settings=settings)
    app.add_middleware(BodyLimit, settings=settings)
    # Routers register here, one line each (public pages, webhooks, admin; admin adds the session).
    app.include_router(public.router)
    app.include_router(archive.router)
    app.include_router(feeds.router)
    app.include_router(webhooks.router)
    admin.install(app, settings)
    app.add_exception_handler(BadLink, public.bad_link_page)
    app.add_exception_handler(OverflowError, _out_of_range)
    app.add_exception_handler(DataError, _out_of_range)
    redact_tokens_in_access_log()

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        """On the event loop, not the threadpool: it must answer while argon2 or an import fills the pool."""
        return {"status": "ok"}

    return app
