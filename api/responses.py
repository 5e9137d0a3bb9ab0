"""Sending tabular answers: ETag and Cache-Control, 304s, gzip, and a shared response cache.

An answer is encoded chunk by chunk (:mod:`api.formats`). Up to :data:`BUFFER_BYTES` it is
kept whole: it gets a weak ETag (a digest of its bytes), a 304 when the caller's
``If-None-Match`` matches, gzip when the caller accepts it, and a place in the process's
response cache. A larger answer is streamed as it is encoded (gzip by the middleware), without
an ETag.

Cache-Control says how long an answer stays true. History that cannot change any more (its
range ends before the newest session) is ``private, max-age=<API_HISTORY_MAX_AGE_S>`` and is
cached here for as long; an answer that reaches the present is ``private, no-cache`` (the caller
revalidates with its ETag) and is cached here only for :attr:`ApiSettings.api_fresh_cache_s`
seconds, which absorbs bursts of identical requests without serving a stale day.
"""

from __future__ import annotations

import gzip
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import pyarrow as pa
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Scope

from api import metrics
from api.formats import Format, encode

BUFFER_BYTES: Final = 1 << 20
"""Answers up to this size are sent whole, with an ETag; larger ones are streamed."""
GZIP_MIN: Final = 1024
GZIP_LEVEL: Final = 5
NO_STORE: Final = "no-store"
REFRESH: Final = "condvest.refresh"
"""Scope key of a request the API makes itself to renew a cached answer (:mod:`api.fastpath`):
it reads the data afresh, whatever is cached, and is not counted against the caller's limit."""
REFRESH_AT: Final = 0.5
"""An answer in use is renewed once less than this share of its time in the cache is left."""


@dataclass(frozen=True)
class CachePolicy:
    """How long an answer stays true: ``max_age`` for callers, ``ttl`` for this process."""

    cache_control: str
    ttl: float

    @classmethod
    def history(cls, max_age: int) -> CachePolicy:
        """For ranges that ended before the newest session."""
        return cls(f"private, max-age={max_age}", float(max_age))

    @classmethod
    def fresh(cls, ttl: float) -> CachePolicy:
        """For answers that reach the present: revalidate every time (ETag), cache briefly."""
        return cls("private, no-cache", ttl)


@dataclass
class Stored:
    """An answer kept whole."""

    body: bytes
    etag: str
    media_type: str
    headers: dict[str, str]
    expires: float
    ttl: float = 0.0
    """Seconds it was made to stay true (0: unknown)."""
    _gzipped: bytes | None = field(default=None, repr=False)

    def refresh_due(self, now: float) -> bool:
        """True once less than :data:`REFRESH_AT` of its time is left.

        Renewed while in use, requests never wait for its read when it expires.
        """
        return self.ttl > 0 and self.expires - now < self.ttl * REFRESH_AT

    def gzipped(self) -> bytes:
        """The gzip encoding, made once."""
        if self._gzipped is None:
            self._gzipped = gzip.compress(self.body, compresslevel=GZIP_LEVEL, mtime=0)
        return self._gzipped

    def size(self) -> int:
        """Bytes it holds."""
        return len(self.body) + (len(self._gzipped) if self._gzipped else 0) + 256


def etag_of(body: bytes) -> str:
    """A weak validator for ``body`` (weak: the gzip and identity encodings share it)."""
    return 'W/"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


def etag_matches(header: str | None, etag: str) -> bool:
    """True when ``If-None-Match`` names ``etag`` (weak comparison) or is ``*``."""
    if not header:
        return False
    if header.strip() == "*":
        return True
    ours = etag.removeprefix("W/")
    return any(t.strip().removeprefix("W/") == ours for t in header.split(","))


def accepts_gzip(request: Request) -> bool:
    """True when ``Accept-Encoding`` allows gzip (``gzip`` or ``*`` with a q above 0)."""
    for item in request.headers.get("accept-encoding", "").split(","):
        name, _, params = item.strip().partition(";")
        if name.strip().lower() not in ("gzip", "*"):
            continue
        q = params.strip().removeprefix("q=").strip() if params.strip().startswith("q=") else "1"
        try:
            return float(q) > 0
        except ValueError:
            return False
    return False


def send_stored(request: Request, stored: Stored) -> Response:
    """``stored`` as a 200 (gzip when accepted), or a 304 when the caller holds it already."""
    headers = {**stored.headers, "ETag": stored.etag, "Vary": "Accept, Accept-Encoding"}
    if etag_matches(request.headers.get("if-none-match"), stored.etag):
        return Response(status_code=304, headers=headers)
    body = stored.body
    if (
        len(body) >= GZIP_MIN
        and accepts_gzip(request)
        and not stored.media_type.startswith("application/vnd.apache.parquet")
    ):
        body = stored.gzipped()
        headers["Content-Encoding"] = "gzip"
    return Response(body, headers=headers, media_type=stored.media_type)


class Answers(Protocol):
    """Where cached answers are found (:class:`api.resources.Resources`)."""

    responses: ResponseCache

    async def answer(self, key: tuple[Any, ...]) -> Stored | None:
        """The answer under ``key``, if any."""


Share = Callable[[tuple[Any, ...], Stored, float], None]
"""Called with (key, answer, seconds it stays true) for each answer kept (see api.shared)."""


Signature = tuple[str, bytes, bytes]
"""(path, raw query string, Accept) of a request: what fixes its route, parameters and format."""
MAX_SIGNATURES: Final = 50_000


def header_of(scope: Scope, name: bytes) -> bytes:
    """The first value of header ``name`` (lower case) in an ASGI scope, or empty."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return b""


def signature(scope: Scope) -> Signature:
    """The signature of an HTTP request (see :meth:`ResponseCache.remember`)."""
    return (scope["path"], scope.get("query_string", b""), header_of(scope, b"accept"))


@dataclass(frozen=True)
class Remembered:
    """Where a request's answer is: its cache key but the data's tag, the tag's lake files."""

    key: tuple[Any, ...]
    tag_keys: tuple[str, ...]
    route: Any
    """The route that made it (the metrics label it)."""


class ResponseCache:
    """Whole answers by request (path, query, format), least recently used out first.

    It also remembers which requests led to which answer (:meth:`remember`), so that an
    identical request can be answered before routing (:mod:`api.fastpath`).
    """

    def __init__(self, max_bytes: int, share: Share | None = None) -> None:
        self.max_bytes = max_bytes
        self.share = share
        self._requests: OrderedDict[Signature, Remembered] = OrderedDict()
        self._items: OrderedDict[tuple[Any, ...], Stored] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @staticmethod
    def key(request: Request, fmt: Format | str, tag: str | None = None) -> tuple[Any, ...]:
        """The request as a cache key: path, sorted query, format, state of the data read.

        ``tag`` names the state of the data the answer was read from, when one is known.
        """
        query = tuple(sorted(request.query_params.multi_items()))
        return (request.url.path, query, str(fmt), tag)

    def remember(self, scope: Scope, key: tuple[Any, ...], tag_keys: Sequence[str]) -> None:
        """Note that the GET request of ``scope`` is answered by the entry under ``key``.

        ``key``'s last item is the data's tag, computed from the lake files ``tag_keys``.
        """
        route = scope.get("route")
        if scope.get("method") != "GET" or route is None:
            return
        entry = Remembered(key[:-1], tuple(tag_keys), route)
        sig = signature(scope)
        with self._lock:
            self._requests[sig] = entry
            self._requests.move_to_end(sig)
            while len(self._requests) > MAX_SIGNATURES:
                self._requests.popitem(last=False)

    def recall(self, scope: Scope) -> Remembered | None:
        """Where the answer to a request identical to ``scope``'s was kept, if anywhere."""
        return self._requests.get(signature(scope))

    def get(self, key: tuple[Any, ...]) -> Stored | None:
        """The live entry under ``key``, if any (counted as a hit or a miss)."""
        now = time.monotonic()
        with self._lock:
            stored = self._items.get(key)
            if stored is not None and stored.expires <= now:
                self._drop(key)
                stored = None
            if stored is not None:
                self._items.move_to_end(key)
        metrics.cache_lookup("responses", hit=stored is not None)
        return stored

    def put(self, key: tuple[Any, ...], stored: Stored, *, share: bool = True) -> None:
        """Keep ``stored`` (when it fits), evicting the least recently used.

        With ``share`` (an answer made here, not one taken from the shared store) it is also
        handed to the cache's ``share`` callback.
        """
        if self.max_bytes <= 0 or stored.size() > self.max_bytes // 4:
            return
        if share and self.share is not None:
            self.share(key, stored, stored.expires - time.monotonic())
        with self._lock:
            if key in self._items:
                self._drop(key)
            self._items[key] = stored
            self._bytes += stored.size()
            while self._bytes > self.max_bytes and self._items:
                self._drop(next(iter(self._items)))

    def _drop(self, key: tuple[Any, ...]) -> None:
        old = self._items.pop(key)
        self._bytes -= old.size()

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._items.clear()
            self._requests.clear()
            self._bytes = 0


async def cached(
    request: Request,
    res: Answers,
    fmt: Format,
    tag: str | None = None,
    tag_keys: Sequence[str] = (),
) -> Response | None:
    """The cached answer to this request (read from data in state ``tag``), if any.

    A hit is remembered under this request's own signature, so the next identical request is
    answered before routing (:mod:`api.fastpath`), however it spelled ``Accept``.
    """
    if request.scope.get(REFRESH):
        return None
    key = ResponseCache.key(request, fmt, tag)
    stored = await res.answer(key)
    if stored is None:
        return None
    res.responses.remember(request.scope, key, tag_keys)
    return send_stored(request, stored)


def render(
    request: Request,
    fmt: Format,
    table: pa.Table,
    envelope: Mapping[str, Any],
    *,
    rows_key: str,
    policy: CachePolicy | None,
    cache: ResponseCache | None = None,
    headers: Mapping[str, str] | None = None,
    tag: str | None = None,
    tag_keys: Sequence[str] = (),
) -> Response:
    """The answer: whole (ETag, 304, gzip, cached under ``policy``) or streamed when large.

    ``tag`` is the state of the lake files ``tag_keys`` the answer was read under.
    """
    out_headers = {"Cache-Control": policy.cache_control if policy else NO_STORE, **(headers or {})}
    chunks = encode(fmt, table, envelope, rows_key)
    head: list[bytes] = []
    size = 0
    for chunk in chunks:
        head.append(chunk)
        size += len(chunk)
        if size > BUFFER_BYTES:
            return _streamed(head, chunks, fmt, out_headers)
    body = b"".join(head)
    stored = Stored(
        body=body,
        etag=etag_of(body),
        media_type=fmt.media_type,
        headers=out_headers,
        expires=time.monotonic() + (policy.ttl if policy else 0.0),
        ttl=policy.ttl if policy else 0.0,
    )
    if cache is not None and policy is not None and policy.ttl > 0:
        key = ResponseCache.key(request, fmt, tag)
        cache.put(key, stored)
        cache.remember(request.scope, key, tag_keys)
    return send_stored(request, stored)


def _streamed(
    head: list[bytes], rest: Iterator[bytes], fmt: Format, headers: Mapping[str, str]
) -> StreamingResponse:
    def body() -> Iterator[bytes]:
        yield from head
        head.clear()
        yield from rest

    return StreamingResponse(body(), media_type=fmt.media_type, headers=dict(headers))
