"""The FastAPI application factory.

`create_app(settings)` builds one app around one engine; `newsletter web` serves it with uvicorn and
`newsletter run` serves it beside the scheduler. Pages are rendered on the server from
`templates/web/` with autoescaping; there is no front-end build.
"""

from __future__ import annotations

import jinja2
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.engine import Engine

from newsletter.core.config import Settings
from newsletter.core.db import open_engine
from newsletter.web import admin, public, webhooks


def create_app(settings: Settings, engine: Engine | None = None) -> FastAPI:
    app = FastAPI(title="newsletter", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.engine = engine or open_engine(settings.DATABASE_URL)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(settings.templates_dir / "web")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    app.state.templates = Jinja2Templates(env=env)
    static = settings.templates_dir / "web" / "static"
    if static.is_dir():
        app.mount("/static", StaticFiles(directory=str(static)), name="static")

    # Routers register here, one line each (public pages, webhooks, admin).
    app.include_router(public.router)
    app.include_router(webhooks.router)
    admin.install(app, settings)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
