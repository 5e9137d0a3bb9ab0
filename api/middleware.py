"""The ASGI layer every request passes: request id, metrics, and headers set by dependencies.

Pure ASGI (not Starlette's BaseHTTPMiddleware) so streamed answers pass through untouched and
the cost per request stays a few microseconds. Dependencies that need to add a header to
whatever answer the route returns (the rate limiter's ``RateLimit-*``) put it in
``scope["state"]["response_headers"]`` with :func:`add_response_header`.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import metrics
from api.requestids import HEADER, accept_or_new, reset_request_id, set_request_id

_STATE_KEY = "response_headers"


def add_response_header(conn: HTTPConnection, name: str, value: str) -> None:
    """Send ``name: value`` with this request's answer, whatever the route returns."""
    state: dict[str, Any] = conn.scope.setdefault("state", {})
    state.setdefault(_STATE_KEY, {})[name] = value


def _route_label(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class ObservabilityMiddleware:
    """Request ids in and out, request metrics, and dependency-set headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = None
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                given = value.decode("latin-1")
                break
        rid = accept_or_new(given)
        token = set_request_id(rid)
        scope.setdefault("state", {})
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers[HEADER] = rid
                for name, value in scope["state"].get(_STATE_KEY, {}).items():
                    if name not in headers:
                        headers[name] = value
                metrics.LATENCY.labels(scope["method"], _route_label(scope)).observe(
                    time.perf_counter() - started
                )
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            if scope["type"] == "http":
                metrics.REQUESTS.labels(scope["method"], _route_label(scope), str(status)).inc()
            reset_request_id(token)
