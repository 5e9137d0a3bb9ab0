"""Polygon's REST API (the real service or the simulator): rate limited, retried, key-safe.

Uses urllib3 directly rather than ``polygon-api-client``'s ``RESTClient``: that client retries
on its own (hiding every failure from our accounting), ignores its read timeout and decodes
rows into model objects we would only turn back into columns. Here one :meth:`get_json` is one
logical request: a token from the shared :class:`RateLimiter`, then up to
``polygon_max_attempts`` HTTP attempts with exponential backoff and full jitter on 429, 5xx,
timeouts and connection errors, honouring ``Retry-After``. Anything else (401, 404, ...) fails
at once: retrying cannot fix it.

The key travels only in the ``Authorization: Bearer`` header, so it never appears in a URL that
a log line or an exception could show; URLs in messages are stripped of any ``apiKey`` anyway.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
import urllib3
from pydantic import SecretStr

from core.settings import POLYGON_REST, PolygonSettings
from dataflows.connectors.websocket import SIMULATOR_KEY, polygon_key

log = logging.getLogger(__name__)

RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504, 520, 522, 524})
MAX_RETRY_AFTER_S: Final = 120.0
"""A Retry-After longer than this is capped: we would rather fail the session and retry later."""
NO_SOURCE_MESSAGE: Final = (
    "no Polygon source configured: set POLYGON_REST_URL to the simulator "
    "(start it with `python -m dataflows.simulator`, which prints the URL) "
    "or set POLYGON_API_KEY (or POLYGON_SECRET_ID) for the real Polygon"
)


class PolygonError(RuntimeError):
    """A request failed for good (after retries, or at once when retrying cannot help).

    The message names the path and the last status or error, never the key.
    """

    def __init__(self, message: str, *, status: int | None = None, attempts: int = 0) -> None:
        super().__init__(message)
        self.status = status
        self.attempts = attempts


class PolygonConfigError(PolygonError):
    """Neither a key nor a REST URL is configured."""


class RateLimiter:
    """Token bucket shared by threads: ``rate_per_s`` tokens a second, at most ``burst`` saved."""

    def __init__(
        self,
        rate_per_s: float,
        burst: int = 1,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate_per_s <= 0:
            msg = f"rate_per_s must be positive, not {rate_per_s}"
            raise ValueError(msg)
        if burst < 1:
            msg = f"burst must be at least 1, not {burst}"
            raise ValueError(msg)
        self.rate = float(rate_per_s)
        self.burst = int(burst)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = float(burst)
        self._stamp = clock()

    def acquire(self) -> None:
        """Take one token, sleeping (outside the lock) until one is available."""
        while True:
            with self._lock:
                now = self._clock()
                self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
                self._stamp = now
                if self._tokens >= 1.0 - 1e-9:  # float slack: never spin on a rounding error
                    self._tokens = max(0.0, self._tokens - 1.0)
                    return
                wait = (1.0 - self._tokens) / self.rate
            self._sleep(wait)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempt)]."""

    base: float = 0.5
    cap: float = 30.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based)."""
        return random.uniform(0.0, min(self.cap, self.base * 2.0 ** (attempt - 1)))


class _BadBody(ValueError):
    """A 200 response whose body is unusable (retried: a truncated body may come right next)."""


T = TypeVar("T")


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError:
        msg = "invalid JSON in a 200 response"
        raise _BadBody(msg) from None
    if not isinstance(doc, dict):
        msg = "a 200 response that is not a JSON object"
        raise _BadBody(msg)
    return doc


@dataclass(frozen=True, slots=True)
class Fetched:
    """A decoded JSON body and the HTTP attempts it took."""

    body: dict[str, Any]
    attempts: int


def redact(url: str) -> str:
    """``url`` without credentials in its query (``apiKey``) or userinfo: safe for messages."""
    parts = urlsplit(url)
    query = urlencode(
        [(k, "***" if k.lower() == "apikey" else v) for k, v in parse_qsl(parts.query)]
    )
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    raw = headers.get("Retry-After") or headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def _message(body: bytes) -> str:
    """Polygon's error text from an error body (``error`` or ``message``), shortened."""
    try:
        doc = json.loads(body)
    except ValueError:
        return body[:200].decode("utf-8", "replace")
    if isinstance(doc, dict):
        return str(doc.get("error") or doc.get("message") or doc.get("status") or "")[:200]
    return ""


class PolygonGateway:
    """Rate-limited, retried GETs against Polygon REST; safe to share between threads."""

    def __init__(
        self,
        settings: PolygonSettings,
        *,
        limiter: RateLimiter | None = None,
        key: SecretStr | None = None,
        base_url: str | None = None,
        backoff: Backoff | None = None,
        sleep: Callable[[float], None] = time.sleep,
        pool_size: int = 16,
    ) -> None:
        self.settings = settings
        resolved = key if key is not None else settings.polygon_api_key
        self.base_url = (base_url or settings.polygon_rest_url or "").rstrip("/")
        if not self.base_url:
            if resolved is None:
                raise PolygonConfigError(NO_SOURCE_MESSAGE)
            self.base_url = POLYGON_REST
        self._key = resolved or SecretStr(SIMULATOR_KEY)
        self.limiter = limiter or RateLimiter(settings.requests_per_second, burst=1)
        self.backoff = backoff or Backoff()
        self.max_attempts = settings.polygon_max_attempts
        self._sleep = sleep
        self._http = urllib3.PoolManager(
            num_pools=4,
            maxsize=pool_size,
            retries=False,
            timeout=urllib3.Timeout(
                connect=min(10.0, settings.polygon_timeout_s), read=settings.polygon_timeout_s
            ),
        )

    @classmethod
    def from_settings(
        cls, settings: PolygonSettings | None = None, **kwargs: Any
    ) -> PolygonGateway:
        """The gateway of the settings: key from the environment or Secrets Manager.

        Base URL: ``POLYGON_REST_URL``, else Polygon's with a key; with neither, a clear error.
        """
        s = settings or PolygonSettings()
        key = polygon_key(s)
        if key is None and not s.polygon_rest_url:
            raise PolygonConfigError(NO_SOURCE_MESSAGE)
        return cls(s, key=key, **kwargs)

    def __repr__(self) -> str:
        return f"PolygonGateway({self.base_url!r})"

    def close(self) -> None:
        """Close pooled connections."""
        self._http.clear()

    # -- requests ------------------------------------------------------------------------------
    def _url(self, path: str, params: Mapping[str, Any]) -> str:
        if path.startswith(("http://", "https://")):
            if not path.startswith(self.base_url + "/"):
                msg = f"refusing to send the key to another host: {redact(path)}"
                raise PolygonError(msg)
            url = path
        else:
            url = f"{self.base_url}/{path.lstrip('/')}"
        clean = {k: _param(v) for k, v in params.items() if k != "apiKey" and v is not None}
        if clean:
            url += ("&" if "?" in url else "?") + urlencode(clean)
        return url

    def fetch(self, path: str, params: Mapping[str, Any] | None = None) -> Fetched:
        """One logical GET: rate limited, retried; the decoded body and the attempts it took."""
        return Fetched(*self._get(path, params or {}, _json_object))

    def _get(
        self, path: str, params: Mapping[str, Any], decode: Callable[[bytes], T]
    ) -> tuple[T, int]:
        """One logical GET; ``decode`` turns a 200 body into a value or raises _BadBody."""
        url = self._url(path, params)
        shown = redact(url)
        headers = {
            "Authorization": f"Bearer {self._key.get_secret_value()}",
            "Accept": "application/json",
            "User-Agent": "condvest-pipeline",
        }
        last = "no attempt made"
        status: int | None = None
        for attempt in range(1, self.max_attempts + 1):
            self.limiter.acquire()
            wait: float | None = None
            try:
                resp = self._http.request("GET", url, headers=headers, preload_content=True)
            except urllib3.exceptions.HTTPError as exc:  # timeouts, refused, reset, protocol
                status, last = None, f"{type(exc).__name__}"
            else:
                status = resp.status
                if status == 200:
                    try:
                        return decode(resp.data), attempt
                    except _BadBody as exc:
                        last = str(exc)
                    except PolygonError as exc:  # a well-formed answer we cannot use
                        raise PolygonError(str(exc), status=200, attempts=attempt) from None
                elif status in RETRY_STATUSES:
                    last = f"HTTP {status} {_message(resp.data)}".rstrip()
                    wait = _retry_after(resp.headers)  # 429 sends it; a 503 may too
                else:
                    msg = f"GET {shown} failed: HTTP {status} {_message(resp.data)}".rstrip()
                    raise PolygonError(msg, status=status, attempts=attempt)
            if attempt == self.max_attempts:
                break
            delay = (
                min(wait, MAX_RETRY_AFTER_S) + random.uniform(0.0, 0.1)
                if wait is not None
                else self.backoff.delay(attempt)
            )
            log.warning(
                "GET %s: %s (attempt %d/%d); retrying in %.2fs",
                shown,
                last,
                attempt,
                self.max_attempts,
                delay,
            )
            self._sleep(delay)
        msg = f"GET {shown} failed after {self.max_attempts} attempts: {last}"
        raise PolygonError(msg, status=status, attempts=self.max_attempts)

    def get_json(self, path: str, params: dict[str, Any]) -> dict[str, Any]:
        """One rate-limited, retried GET of ``path`` (relative, or a ``next_url``)."""
        return self.fetch(path, params).body

    def grouped_daily_fetch(self, session: dt.date) -> tuple[list[dict[str, Any]], int]:
        """Unadjusted grouped daily bars of ``session`` and the attempts it took."""
        got = self.fetch(
            f"/v2/aggs/grouped/locale/us/market/stocks/{session.isoformat()}",
            {"adjusted": "false"},
        )
        return _results(got.body, session), got.attempts

    def grouped_daily_table(self, session: dt.date) -> tuple[pa.Table, list[dict[str, Any]], int]:
        """:meth:`grouped_daily_fetch` as :func:`grouped_table` columns, and the attempts.

        A well-formed answer is decoded by Arrow straight into columns (:func:`grouped_columns`,
        no Python object per value); anything else takes the per-row path, which keeps every
        odd row for validation to reject with a reason.
        """

        def decode(data: bytes) -> tuple[pa.Table, list[dict[str, Any]]]:
            fast = grouped_columns(data)
            if fast is not None:
                return fast, []
            return grouped_table(_results(_json_object(data), session))

        (table, junk), attempts = self._get(
            f"/v2/aggs/grouped/locale/us/market/stocks/{session.isoformat()}",
            {"adjusted": "false"},
            decode,
        )
        return table, junk, attempts

    def grouped_daily(self, session: dt.date) -> list[dict[str, Any]]:
        """Raw Polygon result dicts (T, o, h, l, c, v, vw, n, t) of ``session``, unadjusted."""
        return self.grouped_daily_fetch(session)[0]


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


# -- payload conversion (pure) ------------------------------------------------------------------
def _results(body: dict[str, Any], session: dt.date) -> list[Any]:
    results = body.get("results") or []
    if not isinstance(results, list):
        msg = f"grouped daily {session}: 'results' is not a list"
        raise PolygonError(msg, status=200)
    return results


GROUPED_FIELDS: Final = (
    ("symbol", "T", "string"),
    ("open", "o", "float"),
    ("high", "h", "float"),
    ("low", "l", "float"),
    ("close", "c", "float"),
    ("volume", "v", "float"),
    ("vwap", "vw", "float"),
    ("transactions", "n", "int"),
)


def _coerce(value: Any, kind: str) -> Any:
    """One value as the column's type, or None when it has the wrong type (a row to reject)."""
    if kind == "string":
        return value if isinstance(value, str) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if kind == "int":
        return int(value) if float(value).is_integer() else None
    return float(value)


def _column(values: list[Any], kind: str) -> pa.Array:
    typ = {"string": pa.string(), "float": pa.float64(), "int": pa.int64()}[kind]
    try:
        return pa.array(values, typ, from_pandas=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
        return pa.array([_coerce(v, kind) for v in values], typ)


def grouped_table(results: list[Any]) -> tuple[pa.Table, list[dict[str, Any]]]:
    """Grouped-daily result dicts as bronze columns (``date`` from ``t`` in New York).

    Returns the table and the entries that were not JSON objects at all. Fields that are
    missing or mistyped become nulls, which validation then rejects with a reason.
    """
    rows = [r for r in results if isinstance(r, dict)]
    junk = [{"payload": r} for r in results if not isinstance(r, dict)]
    cols = {name: _column([r.get(key) for r in rows], kind) for name, key, kind in GROUPED_FIELDS}
    cols["date"] = _session_dates(_column([r.get("t") for r in rows], "int"))
    return pa.table(cols), junk


def _session_dates(stamps: pa.Array) -> pa.Array:
    """Epoch milliseconds as the New York calendar date."""
    utc = pc.cast(stamps, pa.timestamp("ms", tz="UTC"))
    local = pc.local_timestamp(pc.cast(utc, pa.timestamp("ms", tz="America/New_York")))
    return pc.cast(local, pa.date32())


_NUMBER: Final = (pa.int64(), pa.float64(), pa.null())
_FAST_TYPES: Final = {
    "string": (pa.string(),),
    "float": _NUMBER,
    "int": (pa.int64(), pa.null()),
}
_JSON_PARSE: Final = pajson.ParseOptions(newlines_in_values=True)


def grouped_columns(body: bytes) -> pa.Table | None:
    """A grouped-daily JSON body as :func:`grouped_table` columns, parsed by Arrow; or None.

    None unless every entry is an object whose fields have the expected JSON types (numbers
    where numbers belong, a string symbol, integer ``t`` and ``n``): then Arrow's reading equals
    the per-row path's exactly, and that path handles everything else.
    """
    try:
        doc = pajson.read_json(
            pa.BufferReader(body),
            read_options=pajson.ReadOptions(use_threads=False, block_size=len(body) + 1),
            parse_options=_JSON_PARSE,
        )
    except (pa.ArrowException, ValueError):
        return None
    if doc.num_rows != 1 or "results" not in doc.column_names:
        return None
    results = doc["results"].combine_chunks()
    if not pa.types.is_list(results.type) or results.null_count:
        return None
    entries = results.flatten()
    if not pa.types.is_struct(entries.type) or entries.null_count:
        return None
    if len(entries) == 0:
        return None
    names = {entries.type.field(i).name for i in range(entries.type.num_fields)}
    cols: dict[str, pa.Array] = {}
    for name, key, kind in (*GROUPED_FIELDS, ("date", "t", "int")):
        want = {"string": pa.string(), "float": pa.float64(), "int": pa.int64()}[kind]
        if key not in names:
            col = pa.nulls(len(entries), want)
        else:
            col = entries.field(key)
            if col.type not in _FAST_TYPES[kind]:
                return None
            try:
                col = col.cast(want)  # safe: an int too large for a double raises
            except pa.ArrowInvalid:
                return None
        cols[name] = col
    cols["date"] = _session_dates(cols["date"])
    return pa.table(cols)
