"""Dependencies shared by the routes, as ``Annotated`` aliases.

A route module needs only these: ``Res`` (pools and caches), ``CurrentKey`` (who is calling:
``key.id`` is stable, e.g. the owner of an alert rule), ``Symbol`` (a validated path ticker),
``Fmt`` (the negotiated format) and, at inclusion, ``require_api_key`` (the read scope and the
caller's rate limit) or ``require_scope("alerts")``. Unknown query parameters are refused for
every route by :func:`api.params.strict_query`, installed app-wide.

All of these are ``async`` and do no I/O on the common path (a cached key, one Redis round
trip for the limit), so they never queue behind blocking work in the thread pool.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Query, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader
from starlette.requests import HTTPConnection

from api import ratelimit
from api.formats import Fmt, Format
from api.models import DailyInterval
from api.params import IsoDate, Symbol, valid_symbol
from api.principals import Principal, digest
from api.problems import Problem
from api.resources import Resources

__all__ = [
    "API_KEY_HEADER", "CurrentKey", "Fmt", "Format", "Res", "Symbol", "authenticated",
    "get_resources", "require_api_key", "require_scope", "resolve_key", "valid_symbol",
]  # fmt: skip
API_KEY_HEADER = "X-API-Key"


def get_resources(conn: HTTPConnection) -> Resources:
    """The app's resources (built by ``create_app``), for HTTP and WebSocket routes."""
    res: Resources = conn.app.state.resources
    return res


async def _resources(conn: HTTPConnection) -> Resources:
    # async: FastAPI runs a plain function dependency in the thread pool, a hop per request
    return get_resources(conn)


Res = Annotated[Resources, Depends(_resources)]

_api_key_header = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    description="A key made by `python -m api.keys create`, or one of API_KEYS",
)


async def resolve_key(res: Resources, key: str | None) -> Principal | None:
    """Who holds ``key``, without blocking the event loop (the database only on a cache miss)."""
    if not key or len(key) > 256:
        return None
    if (p := res.env_keys.get(digest(key))) is not None:
        return p
    known, p = res.key_cache.get(digest(key))
    if known:
        return p
    return await run_in_threadpool(res.principal, key)


async def authenticated(
    conn: HTTPConnection,
    x_api_key: Annotated[str | None, Security(_api_key_header)] = None,
) -> Principal:
    """The caller's key; 401 unless ``X-API-Key`` holds an active key."""
    principal = await resolve_key(get_resources(conn), x_api_key)
    if principal is None:
        raise Problem(
            401,
            f"missing or invalid API key (send it in {API_KEY_HEADER})",
            kind="unauthorized",
            headers={"WWW-Authenticate": API_KEY_HEADER},
        )
    conn.state.principal = principal
    return principal


CurrentKey = Annotated[Principal, Depends(authenticated)]


def require_scope(scope: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the caller's key, rate-limited; 403 unless it has ``scope``."""

    async def check(conn: HTTPConnection, key: CurrentKey) -> Principal:
        if scope not in key.scopes:
            raise Problem(403, f"this key lacks the {scope!r} scope", kind="forbidden")
        await ratelimit.enforce(conn, get_resources(conn), key)
        return key

    check.__name__ = f"require_{scope}_scope"
    return check


require_api_key = require_scope("read")
"""What every data route needs: a key with the read scope, within its rate limit."""


MAX_LIMIT = 100_000
IntervalParam = Annotated[DailyInterval, Query(description="1d, or a Fibonacci length")]
StartParam = Annotated[IsoDate | None, Query(description="first date (YYYY-MM-DD)")]
EndParam = Annotated[IsoDate | None, Query(description="last date (YYYY-MM-DD)")]
LimitParam = Annotated[
    int | None, Query(ge=1, le=MAX_LIMIT, description="only the most recent N rows")
]
"""Query parameters every history route takes, spelled once (dates strictly YYYY-MM-DD)."""
