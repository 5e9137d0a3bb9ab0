"""The FastAPI app: routers composed over lazily opened resources.

``create_app`` reads settings (from the environment unless given) and checks them, but opens
nothing: Postgres, Redis and the lake are reached on first use, so the app is cheap to build
and the same object serves uvicorn and tests.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
import redis
from fastapi import Depends, FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from api.auth import check_startup
from api.deps import require_api_key
from api.resources import Resources
from api.routes import alerts, bars, docs, health, indicators, live
from core.lake import LakeError
from core.secrets import register_secret
from core.settings import ApiSettings

log = logging.getLogger(__name__)
UNAVAILABLE: dict[type[Exception], str] = {
    psycopg.OperationalError: "postgres",
    redis.ConnectionError: "redis",
    redis.TimeoutError: "redis",
    LakeError: "lake",
}
"""A dependency that cannot be reached is a 503 naming it, not a 500 with a traceback."""


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(x) for x in err.get("loc", ()) if x not in ("query", "path"))
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


async def _bad_request(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": _validation_detail(exc)}, status.HTTP_400_BAD_REQUEST)


async def _unavailable(_: Request, exc: Exception) -> JSONResponse:
    name = next((v for k, v in UNAVAILABLE.items() if isinstance(exc, k)), "a dependency")
    log.warning("%s unavailable: %s", name, type(exc).__name__)
    return JSONResponse({"detail": f"{name} unavailable"}, status.HTTP_503_SERVICE_UNAVAILABLE)


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    """Build the app; raises :class:`api.auth.InsecureSettingsError` on unsafe settings."""
    settings = settings if settings is not None else ApiSettings()
    check_startup(settings)
    register_secret(settings.api_keys)  # the whole setting, then each key: neither is logged
    accepted = settings.keys()
    for key in accepted:
        register_secret(key)
    resources = Resources(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        resources.close()

    app = FastAPI(
        title="Condvest market data",
        summary="Daily and Fibonacci bars for backtesting and ML; live prices for alerts.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # served below from the installed package, not from a CDN
        redoc_url=None,
    )
    docs.mount(app)
    app.state.resources = resources
    app.add_exception_handler(RequestValidationError, _bad_request)
    for exc_type in UNAVAILABLE:
        app.add_exception_handler(exc_type, _unavailable)
    app.include_router(health.router)
    app.include_router(bars.router, dependencies=[Depends(require_api_key)])
    app.include_router(indicators.router, dependencies=[Depends(require_api_key)])
    app.include_router(live.router, dependencies=[Depends(require_api_key)])
    app.include_router(live.stream_router)
    app.include_router(alerts.router)  # its routes take the caller's owner id (key checked)
    return app
