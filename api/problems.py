"""Errors as RFC 9457 problem details (``application/problem+json``), app-wide.

Every error the API sends, ours or the framework's (unknown route, wrong method, invalid
parameter), has the same shape: ``type``, ``title``, ``status``, ``detail``, ``instance`` and,
when known, the ``request_id`` to quote to an operator. Routes raise :class:`Problem`; the
handlers here turn everything else into one. Input is never echoed at more than
:data:`ECHO_LIMIT` characters (see :func:`clip`), so an error cannot be used to reflect a payload.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import Any, Final

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match

from api.requestids import current_request_id

log = logging.getLogger(__name__)
MEDIA_TYPE: Final = "application/problem+json"
ECHO_LIMIT: Final = 64
"""The most characters of a caller's input an error message repeats."""
TYPE_BASE: Final = "https://condvest.dev/problems/"
"""Problem type URIs: identifiers, one per kind of error (``about:blank`` for plain statuses)."""


def clip(value: object, limit: int = ECHO_LIMIT) -> str:
    """``value`` as text, cut to ``limit`` characters (with an ellipsis) for quoting in errors."""
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ProblemDetail(BaseModel):
    """An error (RFC 9457): what went wrong, for people (``detail``) and programs (``type``)."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "example": {
                "type": "https://condvest.dev/problems/invalid-parameter",
                "title": "Invalid parameter",
                "status": 400,
                "detail": "unknown query parameter: adjusted",
                "instance": "/v1/bars/AAPL",
            }
        },
    )

    type: str = Field("about:blank", description="a URI naming the kind of problem")
    title: str = Field(description="short summary of the kind of problem")
    status: int = Field(description="the HTTP status code")
    detail: str = Field(description="what went wrong with this request")
    instance: str | None = Field(None, description="the request path")
    request_id: str | None = Field(None, description="quote it when reporting the error")


class Problem(Exception):
    """Raise to answer with a problem; ``kind`` names its type under :data:`TYPE_BASE`."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        kind: str | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.kind = kind
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


def problem_response(
    status: int,
    detail: str,
    *,
    instance: str | None = None,
    kind: str | None = None,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Response:
    """The problem+json response (never cached)."""
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    body: dict[str, Any] = {
        "type": TYPE_BASE + kind if kind else "about:blank",
        "title": kind.replace("-", " ").capitalize() if kind else title,
        "status": status,
        "detail": detail,
    }
    if instance is not None:
        body["instance"] = clip(instance)
    if (rid := current_request_id()) is not None:
        body["request_id"] = rid
    body.update(extra or {})
    out = {"Cache-Control": "no-store", **(headers or {})}
    return Response(orjson.dumps(body), status_code=status, headers=out, media_type=MEDIA_TYPE)


def validation_detail(errors: Iterable[Mapping[str, Any]]) -> str:
    """One line per invalid input, naming it and quoting at most :data:`ECHO_LIMIT` characters."""
    parts = []
    for err in errors:
        loc = [str(x) for x in err.get("loc", ()) if x not in ("query", "path", "header", "body")]
        where = clip(".".join(loc) or "request")
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if "input" in err and err.get("type") not in ("missing",):
            msg = f"{msg} (got {clip(repr(err['input']))})"
        parts.append(f"{where}: {clip(msg, 200)}")
    return "; ".join(parts[:10]) or "invalid request"


def unavailable(name: str, instance: str) -> Response:
    """The 503 for a dependency (``name``: postgres, redis, the lake) that cannot be reached."""
    return problem_response(
        503,
        f"{name} unavailable",
        instance=instance,
        kind="unavailable",
        headers={"Retry-After": "5"},
    )


def answer(exc: Problem, instance: str) -> Response:
    """The response to a raised :class:`Problem` about ``instance`` (the request's path)."""
    return problem_response(
        exc.status,
        exc.detail,
        instance=instance,
        kind=exc.kind,
        headers=exc.headers,
        extra=exc.extra,
    )


async def _on_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return answer(exc, request.url.path)


async def _on_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return problem_response(
        400, validation_detail(exc.errors()), instance=request.url.path, kind="invalid-parameter"
    )


async def _on_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no route {clip(request.url.path)}"
    headers = exc.headers
    if exc.status_code == 405:
        headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
    return problem_response(exc.status_code, detail, instance=request.url.path, headers=headers)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at the request's path.

    Starlette's 405 names only the first route whose path matched, so a path served by two
    routes (``GET`` and ``POST /v1/alerts``) would advertise one of them.
    """
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "\x00"})
        if match is Match.PARTIAL:
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)


async def _on_error(request: Request, exc: Exception) -> Response:
    log.error("unhandled %s on %s", type(exc).__name__, request.url.path, exc_info=exc)
    return problem_response(500, "internal error", instance=request.url.path)


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` with problem+json."""
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(Exception, _on_error)


_DESCRIPTIONS: Final = {
    400: "invalid input: an unknown, repeated or malformed parameter",
    401: "missing or invalid API key",
    403: "the key lacks the scope this route needs",
    404: "nothing found",
    406: "none of the formats in Accept can be served",
    429: "rate limit exceeded; see Retry-After",
    503: "a dependency (Postgres, Redis, the lake) is unavailable",
}


def problems(*codes: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the problem statuses a route sends (pass to the decorator).

    ``descriptions`` override the default text by code, e.g. ``problems(404, c404="no data")``.
    """
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        text = descriptions.get(f"c{code}", _DESCRIPTIONS.get(code, HTTPStatus(code).phrase))
        entry: dict[str, Any] = {
            "description": text,
            "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/ProblemDetail"}}},
        }
        if code == 429:
            entry["headers"] = {
                "Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}
            }
        out[code] = entry
    return out
