"""The steady state made cheap: a request whose answer is cached skips the framework entirely.

Resolving a route's dependencies (strict parameters, the key header, the path, paging, the
format, every query value through pydantic) costs about half a millisecond of CPU per request,
ten times what sending a cached answer costs. So when a whole answer is cached,
:meth:`api.responses.ResponseCache.remember` notes the request that produced it: path, raw query string and ``Accept``
header, which fix the route, the validated parameters and the format. An identical request is
then served here, before routing, redoing only what can differ between two identical requests:

- the key: the caller's own, resolved from memory (``API_KEYS``, or the key cache of
  ``API_KEY_CACHE_S``, which bounds how long a revoked key is honoured, as on the full path);
  a key not known in memory, or without the ``read`` scope, takes the full path;
- the rate limit: counted as on the full path, 429 and RateLimit headers alike;
- the state of the data: the tag of the lake files the answer depends on must still be the one
  it was read under, known in memory (else the full path looks it up);
- the answer's freshness, ETag / 304 and gzip: :func:`api.responses.send_stored`, as always.

An answer that reaches the present is cached only briefly (``API_FRESH_CACHE_S``); had it
simply expired, every request for it would wait for a read then, and answers cached together
expire together (a burst of reads). So an answer still in use is renewed ahead of its expiry:
once less than half its time is left, the request is made again in the background, reading the
data afresh (never the cache, never counted against the caller's limit), one renewal at a time
per process; the callers keep the copy that is still true meanwhile. No answer is served past
its expiry.

The latest quote (``GET /v1/latest/{symbol}`` without a query) is never cached, but once the
router has served one, the next are served here the same way: a valid ticker and a key known
in memory go straight to its one Redis MGET.

Request ids, metrics (labelled with the route's template) and CORS come from the middleware
around this one. Anything else (another method, a cache miss, an unknown key) goes on to the
app unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import MutableMapping
from typing import Any, Final

import redis
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from api import metrics, ratelimit
from api.params import SYMBOL_PATTERN
from api.principals import Principal, digest
from api.problems import Problem, answer, unavailable
from api.resources import Resources
from api.responses import REFRESH, Stored, header_of, send_stored
from api.routes import live
from core.layout import LayoutError, normalise_symbol

log = logging.getLogger(__name__)
LATEST_ROUTE: Final = "/v1/latest/{symbol}"
LATEST_PREFIX: Final = "/v1/latest/"
_SYMBOL: Final = re.compile(SYMBOL_PATTERN)
SCOPE: Final = "read"
"""What a cached answer needs: every route that renders cached answers is a read route."""


def _principal(res: Resources, raw: bytes) -> Principal | None:
    """The key's holder when it is known in memory and may read; else None (full path)."""
    if not raw or len(raw) > 256:
        return None
    d = digest(raw.decode("latin-1"))
    p = res.env_keys.get(d)
    if p is None:
        known, p = res.key_cache.get(d)
        if not known:
            return None
    return p if p is not None and SCOPE in p.scopes else None


class FastAnswers:
    """Serve cached answers to identical requests without routing (see the module doc)."""

    def __init__(self, app: ASGIApp, resources: Resources) -> None:
        self.app = app
        self.res = resources
        self._latest_route: Any = None
        self._renewing: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
        elif scope["path"].startswith(LATEST_PREFIX) and not scope.get("query_string"):
            if not await self._latest(scope, receive, send):
                await self.app(scope, receive, send)
                if getattr(scope.get("route"), "path", None) == LATEST_ROUTE:
                    self._latest_route = scope["route"]  # the metrics label, from the router
        elif not await self._serve(scope, receive, send):
            await self.app(scope, receive, send)

    async def _latest(self, scope: Scope, receive: Receive, send: Send) -> bool:
        text = scope["path"][len(LATEST_PREFIX) :]
        if not _SYMBOL.match(text):
            return False
        try:
            symbol = normalise_symbol(text)
        except LayoutError:
            return False
        principal = _principal(self.res, header_of(scope, b"x-api-key"))
        route = self._latest_route
        if principal is None or route is None:
            return False
        scope["route"] = route
        request = Request(scope, receive)
        request.state.principal = principal
        try:
            await ratelimit.enforce(request, self.res, principal)
            response = await live.latest_response(self.res, symbol)
        except Problem as exc:
            response = answer(exc, request.url.path)
        except (redis.RedisError, OSError) as exc:  # as the app's handler answers it
            log.warning("redis unavailable: %s", type(exc).__name__)
            response = unavailable("redis", request.url.path)
        await response(scope, receive, send)
        return True

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> bool:
        res = self.res
        entry = res.responses.recall(scope)
        if entry is None:
            return False
        known, tag = res.known_tag(entry.tag_keys)
        stored = res.responses.get((*entry.key, tag)) if known else None
        principal = _principal(res, header_of(scope, b"x-api-key")) if stored else None
        metrics.cache_lookup("fastpath", hit=principal is not None)
        if stored is None or principal is None:
            return False
        scope["route"] = entry.route  # the metrics' route label, as on the full path
        request = Request(scope, receive)
        request.state.principal = principal
        try:
            await ratelimit.enforce(request, res, principal)
        except Problem as exc:
            await answer(exc, request.url.path)(scope, receive, send)
            return True
        await send_stored(request, stored)(scope, receive, send)
        self._renew(scope, stored)
        return True

    def _renew(self, scope: Scope, stored: Stored) -> None:
        """Make the request again in the background when ``stored`` nears its expiry."""
        if (self._renewing is not None and not self._renewing.done()) or not stored.refresh_due(
            time.monotonic()
        ):
            return
        headers = [(k, v) for k, v in scope["headers"] if k != b"if-none-match"]
        inner = {**scope, "headers": headers, "state": dict(scope.get("state") or {})}
        inner[REFRESH] = True
        inner.pop("route", None)
        self._renewing = asyncio.get_running_loop().create_task(self._renewal(inner))

    async def _renewal(self, scope: Scope) -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            return None

        try:
            await self.app(scope, receive, send)
        except Exception as exc:  # the cached copy stays until it expires; the next use retries
            log.warning("renewing a cached answer failed: %s", type(exc).__name__)
