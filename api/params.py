"""Strict input: the parameter types every route shares, and the refusal of unknown ones.

A caller who misspells a parameter (``adjusted=true`` where none exists, ``cursor`` on a route
that does not page) must learn it, not get an answer to another question: :func:`strict_query`
is an app-wide dependency that answers 400 naming every query parameter the matched route
does not declare (or declares once and got twice). Routes need do nothing: their declared
parameters, and those of their dependencies, are what is allowed.

Dates are ISO ``YYYY-MM-DD`` only (pydantic alone would take an epoch number); instants are
RFC 3339 with an offset. Symbols have a pattern and a length limit in the OpenAPI schema.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from typing import Annotated, Any, Final

from fastapi import Depends, Path, Query, params
from fastapi.dependencies.utils import get_flat_params
from fastapi.routing import APIRoute
from pydantic import BeforeValidator, WithJsonSchema
from starlette.requests import HTTPConnection

from api.problems import Problem, clip
from core.layout import LayoutError, normalise_symbol

SYMBOL_PATTERN: Final = r"^(?:[A-Z][A-Za-z0-9.\-]{0,14}|[a-z][a-z0-9.\-]{0,14})$"
"""What :func:`core.layout.normalise_symbol` accepts: a capital first letter (case kept), or all
lower case (upper-cased); 1-15 characters of letters, digits, dot and dash."""
SYMBOL_MAX: Final = 15
_ONE: Final = SYMBOL_PATTERN[1:-1]
SYMBOLS_PATTERN: Final = rf"^{_ONE}(?:,{_ONE})*$"
MAX_SYMBOLS: Final = 500
"""Most symbols one request (or one WebSocket) may name."""
_ISO_DATE: Final = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_RFC3339: Final = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})$"
)
_allowed_cache: dict[int, frozenset[str]] = {}


def _iso_date(value: object) -> object:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if not isinstance(value, str) or not _ISO_DATE.match(value):
        msg = "expected a date as YYYY-MM-DD"
        raise ValueError(msg)
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        msg = "not a calendar date (YYYY-MM-DD)"
        raise ValueError(msg) from None


def _rfc3339(value: object) -> object:
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value
    if not isinstance(value, str) or not _RFC3339.match(value):
        msg = "expected an RFC 3339 instant with an offset, e.g. 2025-01-02T14:30:00Z"
        raise ValueError(msg)
    try:
        return dt.datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        msg = "not a valid RFC 3339 instant"
        raise ValueError(msg) from None


IsoDate = Annotated[
    dt.date,
    BeforeValidator(_iso_date),
    WithJsonSchema({"type": "string", "format": "date", "pattern": _ISO_DATE.pattern}),
]
"""A date parameter: ``YYYY-MM-DD`` and nothing else."""
Instant = Annotated[
    dt.datetime,
    BeforeValidator(_rfc3339),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": _RFC3339.pattern}),
]
"""An intraday instant: RFC 3339 with ``Z`` or an offset."""


def valid_symbol_text(text: str) -> str:
    """``text`` as the lake spells it; 400 when it cannot be a ticker."""
    try:
        return normalise_symbol(text)
    except LayoutError:
        raise Problem(400, f"invalid symbol {clip(text)!r}", kind="invalid-parameter") from None


async def valid_symbol(
    symbol: Annotated[
        str,
        Path(
            description="Ticker, e.g. AAPL or BRK.B (all lower case is upper-cased)",
            pattern=SYMBOL_PATTERN,
            max_length=SYMBOL_MAX,
        ),
    ],
) -> str:
    """The path's symbol as the lake spells it; 400 when it cannot be a ticker."""
    try:
        return normalise_symbol(symbol)
    except LayoutError:
        raise Problem(400, f"invalid symbol {clip(symbol)!r}", kind="invalid-parameter") from None


Symbol = Annotated[str, Depends(valid_symbol)]


def parse_symbols(raw: str, *, limit: int = MAX_SYMBOLS) -> list[str]:
    """Comma-separated tickers, normalised, de-duplicated in order; 400 naming a bad one."""
    out: dict[str, None] = {}
    for part in raw.split(","):
        text = part.strip()
        if not text:
            continue
        out[valid_symbol_text(text)] = None
    if not out:
        raise Problem(400, "symbols: name at least one symbol", kind="invalid-parameter")
    if len(out) > limit:
        raise Problem(400, f"symbols: at most {limit} per request", kind="invalid-parameter")
    return list(out)


SymbolsQuery = Annotated[
    str,
    Query(
        description=f"comma-separated tickers, at most {MAX_SYMBOLS}",
        pattern=SYMBOLS_PATTERN,
        max_length=MAX_SYMBOLS * 16,
    ),
]


def allowed_query(route: APIRoute) -> frozenset[str]:
    """Query parameter names ``route`` (with its dependencies) declares."""
    key = id(route)
    names = _allowed_cache.get(key)
    if names is None:
        flat = get_flat_params(route.dependant)
        names = frozenset(p.alias for p in flat if isinstance(p.field_info, params.Query))
        _allowed_cache[key] = names
    return names


def unknown_parameters(given: list[str], allowed: frozenset[str]) -> tuple[list[str], list[str]]:
    """(names not allowed, allowed names given more than once), each sorted."""
    counts = Counter(given)
    unknown = sorted(n for n in counts if n not in allowed)
    repeated = sorted(n for n, c in counts.items() if c > 1 and n in allowed)
    return unknown, repeated


async def strict_query(conn: HTTPConnection) -> None:
    """400 naming the query parameters the route does not declare, or got more than once."""
    route = conn.scope.get("route")
    if conn.scope["type"] != "http" or not isinstance(route, APIRoute):
        return
    given = [k for k, _ in conn.query_params.multi_items()]
    if not given:
        return
    unknown, repeated = unknown_parameters(given, allowed_query(route))
    parts = []
    if unknown:
        names = ", ".join(clip(n, 32) for n in unknown[:10])
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        parts.append(f"unknown query parameter{'s' if len(unknown) > 1 else ''}: {names}{more}")
    if repeated:
        parts.append("given more than once: " + ", ".join(clip(n, 32) for n in repeated[:10]))
    if parts:
        extra: dict[str, Any] = {"unknown": [clip(n, 32) for n in unknown[:10]]}
        raise Problem(400, "; ".join(parts), kind="invalid-parameter", extra=extra)
