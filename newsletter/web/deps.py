"""Request-scoped dependencies shared by every router (FastAPI `Annotated` aliases keep routes short)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Form, Path, Request
from fastapi.templating import Jinja2Templates
from sqlalchemy.engine import Engine
from sqlmodel import Session

from newsletter.core.config import Settings


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def get_session(request: Request) -> Iterator[Session]:
    """A session per request; the route commits what it changes (nothing is committed implicitly)."""
    with Session(get_engine(request), expire_on_commit=False) as session:
        request.state.session = session  # admin pages read their banners through it (see pages.render)
        yield session


def get_templates(request: Request) -> Jinja2Templates:
    templates: Jinja2Templates = request.app.state.templates
    return templates


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
SessionDep = Annotated[Session, Depends(get_session)]
TemplatesDep = Annotated[Jinja2Templates, Depends(get_templates)]


MAX_DB_ID = 2**63 - 1
"""The largest id either database stores: a larger number in a URL or form names nothing (422, not 500)."""

DbId = Annotated[int, Path(ge=1, le=MAX_DB_ID)]
"""A row id in a URL path."""
DbIdForm = Annotated[int, Form(ge=1, le=MAX_DB_ID)]


def client_ip(request: Request) -> str:
    """The client as rate limits count it: the peer, or, when the peer is one of `TRUSTED_PROXIES`, the
    last address that proxy appended to `X-Forwarded-For` (earlier entries are whatever the client
    claimed); an IPv6 address by its /64 (`client_network`)."""
    peer = request.client.host if request.client else "unknown"
    settings: Settings = request.app.state.settings
    if peer in settings.trusted_proxies:
        forwarded = request.headers.get("x-forwarded-for", "")
        hops = [h.strip() for h in forwarded.split(",") if h.strip()]
        if hops:
            return client_network(hops[-1][:64])
    return client_network(peer)


def client_network(address: str) -> str:
    """An IPv6 address as its /64: one subscriber line is given a whole /64 (RFC 6177), so counting
    single addresses would give anyone 2^64 "clients" to spread guesses over. IPv4 and anything that
    is not an address are returned as they are."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # ::ffff:a.b.c.d is an IPv4 client
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


ClientIp = Annotated[str, Depends(client_ip)]
