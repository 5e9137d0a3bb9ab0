"""Tickers: reference data, the span of each symbol's daily history, and its splits.

Reference data is ``symbol_metadata`` (``dataflows.metadata`` fills it); the span comes from
the lake and Postgres; splits are the corporate actions every adjusted read uses.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Final

import psycopg
import pyarrow as pa
from psycopg.rows import dict_row

from api import daily, fibonacci
from core import layout
from core.lake import Lake

SUMMARY: Final = pa.schema(
    [
        pa.field("symbol", pa.string()),
        pa.field("name", pa.string()),
        pa.field("type", pa.string()),
        pa.field("exchange", pa.string()),
        pa.field("active", pa.bool_()),
        pa.field("market_cap", pa.float64()),
        pa.field("list_date", pa.date32()),
        pa.field("delist_date", pa.date32()),
    ]
)
_LIST: Final = """
SELECT symbol, name, type, exchange, active, market_cap::double precision AS market_cap,
       list_date, delist_date
FROM symbol_metadata
WHERE (%(active)s::boolean IS NULL OR active = %(active)s::boolean)
  AND (%(type)s::text IS NULL OR type = %(type)s::text)
  AND (%(exchange)s::text IS NULL OR exchange = %(exchange)s::text)
  AND (%(q)s::text IS NULL OR symbol ILIKE %(prefix)s OR name ILIKE %(contains)s)
  AND (%(after)s::text IS NULL OR symbol > %(after)s::text)
ORDER BY symbol
LIMIT %(limit)s
"""


@dataclass(frozen=True)
class Filters:
    """What ``GET /v1/symbols`` narrows by."""

    active: bool | None = None
    type: str | None = None
    exchange: str | None = None
    q: str | None = None


def _like(text: str) -> str:
    """``text`` with LIKE's wildcards escaped (backslash is the default escape)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def list_symbols(
    conn: psycopg.Connection[Any], filters: Filters, after: str | None, limit: int
) -> pa.Table:
    """Up to ``limit`` tickers after ``after``, by symbol, as :data:`SUMMARY`."""
    q = filters.q
    params = {
        "active": filters.active,
        "type": filters.type,
        "exchange": filters.exchange,
        "q": q,
        "prefix": None if q is None else _like(q) + "%",
        "contains": None if q is None else "%" + _like(q) + "%",
        "after": after,
        "limit": limit,
    }
    try:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(_LIST, params)
            rows = cur.fetchall()
    except psycopg.errors.UndefinedTable:
        rows = []
    return pa.Table.from_pylist(rows, schema=SUMMARY)


def metadata(conn: psycopg.Connection[Any], symbol: str) -> dict[str, Any] | None:
    """The ``symbol_metadata`` row of ``symbol``."""
    try:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                "SELECT symbol, name, type, exchange, active,"
                " market_cap::double precision AS market_cap, sic_code, sic_description,"
                " list_date, delist_date FROM symbol_metadata WHERE symbol = %s",
                (symbol,),
            )
            return cur.fetchone()
    except psycopg.errors.UndefinedTable:
        return None


def postgres_span(conn: psycopg.Connection[Any], symbol: str) -> tuple[dt.date, dt.date] | None:
    """First and last date of ``symbol`` in raw_ohlcv."""
    try:
        row = conn.execute(
            "SELECT min(date), max(date) FROM raw_ohlcv WHERE symbol = %s", (symbol,)
        ).fetchone()
    except psycopg.errors.UndefinedTable:
        return None
    return None if row is None or row[0] is None else (row[0], row[1])


def lake_span(lake: Lake, symbol: str) -> tuple[dt.date, dt.date] | None:
    """First and last date of ``symbol`` in bronze: data.parquet's statistics and fragment names."""
    spans = []
    if (data := fibonacci.history_span(lake, symbol)) is not None:
        spans.append(data)
    elif lake.exists(layout.consolidated(symbol)):
        t = daily.lake_history(lake, symbol)
        if t.num_rows:
            spans.append((t["date"][0].as_py(), t["date"][-1].as_py()))
    for e in lake.list(layout.symbol_dir(symbol), suffix=".parquet"):
        if (parsed := layout.parse_fragment(e.key)) is not None:
            spans.append((parsed[1], parsed[2]))
    if not spans:
        return None
    return min(s[0] for s in spans), max(s[1] for s in spans)
