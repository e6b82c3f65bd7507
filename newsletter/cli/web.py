"""`newsletter web`: serve the web app (public pages, admin, webhooks) with uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer

from newsletter.cli import context
from newsletter.core.config import Settings, served_base_url


def register(app: typer.Typer) -> None:
    app.command("web")(web_command)


def settings_for(host: str, port: int) -> Settings:
    """The settings for serving on `host:port` (`BASE_URL` derived when unset); says where links point."""
    settings, note = served_base_url(context.settings(), host, port)
    context.err_console.print(note, style="yellow" if note.startswith("warning") else None)
    return settings


def serve(settings: Settings, host: str, port: int) -> None:
    """Run the app until interrupted. Also used by `newsletter run`, beside the scheduler.

    `proxy_headers` with `forwarded_allow_ips` left at uvicorn's default (127.0.0.1) trusts
    X-Forwarded-For only from a proxy on the same host, so the per-IP subscribe limit sees real clients.
    """
    # uvicorn and the app load only when serving: the other commands start faster without them.
    import uvicorn

    from newsletter.web.app import create_app

    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        proxy_headers=True,
        log_level=settings.LOG_LEVEL.lower(),
        server_header=False,
    )


def web_command(
    host: Annotated[str | None, typer.Option(help="Address to listen on (default WEB_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (default WEB_PORT).")] = None,
) -> None:
    """Serve the web app: subscription pages, preference centre, admin and the SendGrid webhook."""
    context.configure_logging()
    host = host or context.settings().WEB_HOST
    port = port or context.settings().WEB_PORT
    serve(settings_for(host, port), host, port)
