"""The FastAPI app: routers composed over lazily opened resources and the shared machinery.

``create_app`` reads settings (from the environment unless given) and checks them, but opens
nothing: Postgres, Redis and the lake are reached on first use, so the app is cheap to build
and the same object serves uvicorn and tests.

What every route gets without asking: unknown query parameters refused (:mod:`api.params`),
errors as problem+json (:mod:`api.problems`), a request id and metrics (:mod:`api.middleware`),
cached answers to repeated requests served before routing (:mod:`api.fastpath`), gzip, CORS for the origins in ``API_CORS_ORIGINS``, and an OpenAPI document that lists the
statuses the machinery sends (400, 401, 403, 429, 503) on every route that can send them.
To add a resource: write ``api/routes/<name>.py`` with an ``APIRouter`` and include it below
with ``dependencies=[Depends(require_api_key)]`` (or ``require_scope(...)``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import redis
from fastapi import Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import Response

from api import problems
from api.auth import check_startup
from api.deps import require_api_key, require_scope
from api.fastpath import FastAnswers
from api.middleware import ObservabilityMiddleware
from api.params import strict_query
from api.problems import ProblemDetail, unavailable
from api.requestids import HEADER as REQUEST_ID_HEADER
from api.resources import Resources
from api.routes import alerts, bars, chart, docs, health, indicators, live, ops, stream, symbols
from core.lake import LakeError
from core.secrets import install_redaction, register_secret
from core.settings import ApiSettings

log = logging.getLogger(__name__)
UNAVAILABLE: dict[type[Exception], str] = {
    psycopg.OperationalError: "postgres",
    redis.ConnectionError: "redis",
    redis.TimeoutError: "redis",
    LakeError: "lake",
}
"""A dependency that cannot be reached is a 503 naming it, not a 500 with a traceback."""
EXPOSED_HEADERS = (
    "ETag", "Link", "Retry-After", "X-Request-ID", "X-Served-By", "RateLimit-Limit",
    "RateLimit-Remaining", "RateLimit-Reset", "RateLimit-Policy",
)  # fmt: skip


async def _unavailable(request: Request, exc: Exception) -> Response:
    name = next((v for k, v in UNAVAILABLE.items() if isinstance(exc, k)), "a dependency")
    log.warning("%s unavailable: %s", name, type(exc).__name__)
    return unavailable(name, request.url.path)


def _problem(text: str) -> dict[str, Any]:
    return {
        "description": text,
        "content": {
            problems.MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/ProblemDetail"}}
        },
    }


def document(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, completed with the statuses the shared machinery sends.

    Every operation may answer 400 (strict parameters); one with the key scheme 401, 403 and
    429; one under ``/v1`` 503. Errors are problem+json whatever a route declared, and
    FastAPI's 422 (never sent: validation errors are 400) is dropped.
    """
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=app.description,
        routes=app.routes,
    )
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas["ProblemDetail"] = ProblemDetail.model_json_schema(
        ref_template="#/components/schemas/{model}"
    )
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    for path, item in doc.get("paths", {}).items():
        for op in item.values():
            responses = op.setdefault("responses", {})
            responses.pop("422", None)
            extra = {400: "invalid input: an unknown, repeated or malformed parameter"}
            if op.get("security"):
                extra |= {
                    401: "missing or invalid API key",
                    403: "the key lacks the scope this route needs",
                    429: "rate limit exceeded; see Retry-After",
                }
            if path.startswith("/v1/"):
                extra[503] = "a dependency (Postgres, Redis, the lake) is unavailable"
            for status, text in extra.items():
                responses.setdefault(str(status), _problem(text))
            for name, resp in responses.items():
                if name.isdigit() and int(name) >= 400 and "HealthResponse" not in str(resp):
                    resp["content"] = _problem("")["content"]
            for name in ("429", "503"):
                if name in responses:
                    responses[name].setdefault("headers", {})["Retry-After"] = {
                        "description": "seconds to wait",
                        "schema": {"type": "integer"},
                    }
    app.openapi_schema = doc
    return doc


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    """Build the app; raises :class:`api.auth.InsecureSettingsError` on unsafe settings."""
    settings = settings if settings is not None else ApiSettings()
    check_startup(settings)
    register_secret(settings.api_keys)  # the whole setting, then each key: neither is logged
    for key in settings.keys():  # noqa: SIM118 - ApiSettings.keys() parses API_KEYS
        register_secret(key)
    install_redaction()  # idempotent; each worker process needs its own
    resources = Resources(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.stopping = False
        await resources.warm()
        yield
        app.state.stopping = True
        await resources.aclose()
        resources.close()

    app = FastAPI(
        title="Condvest market data",
        summary="Daily and Fibonacci bars for backtesting and ML; live prices for alerts.",
        description="Errors are RFC 9457 problem details. Unknown query parameters are a 400. "
        "Every answer carries an X-Request-ID; data routes carry RateLimit headers.",
        version="0.2.0",
        lifespan=lifespan,
        docs_url=None,  # served below from the installed package, not from a CDN
        redoc_url=None,
        dependencies=[Depends(strict_query)],
    )
    docs.mount(app)
    app.state.resources = resources
    app.state.stopping = False
    problems.install(app)
    for exc_type in UNAVAILABLE:
        app.add_exception_handler(exc_type, _unavailable)
    app.include_router(health.router)
    app.include_router(ops.router)
    app.include_router(chart.router)
    app.include_router(bars.router, dependencies=[Depends(require_api_key)])
    app.include_router(indicators.router, dependencies=[Depends(require_api_key)])
    app.include_router(symbols.router, dependencies=[Depends(require_api_key)])
    app.include_router(live.router, dependencies=[Depends(require_api_key)])
    app.include_router(stream.router)
    app.include_router(alerts.router, dependencies=[Depends(require_scope("alerts"))])
    app.openapi = lambda: document(app)  # type: ignore[method-assign]
    app.add_middleware(
        GZipMiddleware,
        minimum_size=1024,
        compresslevel=5,
        exclude_content_types=("text/event-stream", "application/vnd.apache.parquet"),
    )
    app.add_middleware(FastAnswers, resources=resources)  # inside CORS, ids and metrics
    if origins := settings.cors_origins():
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "OPTIONS"],
            allow_headers=["X-API-Key", REQUEST_ID_HEADER, "If-None-Match", "Accept"],
            expose_headers=list(EXPOSED_HEADERS),
            max_age=600,
        )
    app.add_middleware(ObservabilityMiddleware)
    return app
