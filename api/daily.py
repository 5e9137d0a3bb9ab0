"""Daily bars of one symbol: recent ranges from Postgres, full history from the lake.

Where a request is served from:

1. When the requested range starts inside raw_ohlcv's cache window (the last five years and a
   month), Postgres answers; when it has no rows for the range, the lake does.
2. Otherwise the lake answers: the consolidated ``data.parquet`` plus any fragments that are
   newer than its last date (sessions not consolidated yet), merged under the contract's rule
   (newer ``ingested_at`` wins, ``live`` never replaces ``rest``). Without a data.parquet every
   fragment is merged. When the lake has no rows for the range, Postgres is asked.

A range with no rows is an empty list; :func:`symbol_known` tells the route whether the
symbol exists at all (404 otherwise).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, Final, Literal

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg.rows import dict_row

from core import layout, precedence
from core.lake import Lake
from core.schemas import BRONZE_DAILY, conform

Source = Literal["postgres", "lake"]
COLUMNS: Final = (
    "date", "open", "high", "low", "close", "volume", "vwap", "transactions", "source",
)  # fmt: skip
_PG_QUERY: Final = """
SELECT date, open, high, low, close, volume, vwap, transactions, source FROM (
    SELECT date, open, high, low, close, volume, vwap, transactions, source
    FROM raw_ohlcv
    WHERE symbol = %(symbol)s
      AND (%(start)s::date IS NULL OR date >= %(start)s::date)
      AND (%(end)s::date IS NULL OR date <= %(end)s::date)
    ORDER BY date DESC
    LIMIT %(limit)s
) AS recent ORDER BY date
"""


def preferred_source(start: dt.date | None, today: dt.date, window_days: int) -> Source:
    """Postgres when the range begins inside the cache window, else the lake."""
    if start is not None and start >= today - dt.timedelta(days=window_days):
        return "postgres"
    return "lake"


def read_postgres(
    conn: psycopg.Connection[Any],
    symbol: str,
    start: dt.date | None,
    end: dt.date | None,
    limit: int | None,
) -> list[dict[str, Any]]:
    """Rows of raw_ohlcv in the range (the last ``limit`` of them), ascending by date."""
    params = {"symbol": symbol, "start": start, "end": end, "limit": limit}
    try:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(_PG_QUERY, params)
            return list(cur.fetchall())
    except psycopg.errors.UndefinedTable:
        conn.rollback()
        return []


_PG_CLOSES: Final = """
SELECT e.ex, r.date, r.close FROM unnest(%(ex)s::date[]) AS e(ex)
LEFT JOIN LATERAL (
    SELECT date, close FROM raw_ohlcv
    WHERE symbol = %(symbol)s AND date < e.ex ORDER BY date DESC LIMIT 1
) AS r ON true
"""


def pg_closes_before(
    conn: psycopg.Connection[Any], symbol: str, ex_days: Sequence[dt.date]
) -> dict[dt.date, tuple[dt.date, float] | None]:
    """Per ex-date, (date, raw close) of the symbol's last row in raw_ohlcv before it."""
    if not ex_days:
        return {}
    rows = conn.execute(_PG_CLOSES, {"ex": list(ex_days), "symbol": symbol}).fetchall()
    return {ex: None if day is None else (day, float(close)) for ex, day, close in rows}


def symbol_in_postgres(conn: psycopg.Connection[Any], symbol: str) -> bool:
    """True when raw_ohlcv holds any row of ``symbol``."""
    try:
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM raw_ohlcv WHERE symbol = %s)", (symbol,)
        ).fetchone()
    except psycopg.errors.UndefinedTable:
        conn.rollback()
        return False
    return bool(row and row[0])


def _read(lake: Lake, key: str) -> pa.Table:
    return conform(lake.read_table(key), BRONZE_DAILY)


def lake_history(
    lake: Lake, symbol: str, start: dt.date | None = None, end: dt.date | None = None
) -> pa.Table:
    """One row per date of ``symbol`` in [start, end] from the lake, sorted by date."""
    entries = lake.list(layout.symbol_dir(symbol), suffix=".parquet")
    data_key = layout.consolidated(symbol)
    parts: list[pa.Table] = []
    last: dt.date | None = None
    if any(e.key == data_key for e in entries):
        data = _read(lake, data_key)
        if data.num_rows:
            last = pc.max(data["date"]).as_py()
            parts.append(data)
    for e in entries:
        parsed = layout.parse_fragment(e.key)
        if parsed is None or (last is not None and parsed[2] <= last):
            continue
        if (start is not None and parsed[2] < start) or (end is not None and parsed[1] > end):
            continue
        parts.append(_read(lake, e.key))
    if not parts:
        return BRONZE_DAILY.empty_table()
    only_data = len(parts) == 1 and last is not None  # data.parquet is one row per date already
    merged = parts[0] if only_data else precedence.merge(pa.concat_tables(parts))
    if start is not None:
        merged = merged.filter(pc.greater_equal(merged["date"], pa.scalar(start, pa.date32())))
    if end is not None:
        merged = merged.filter(pc.less_equal(merged["date"], pa.scalar(end, pa.date32())))
    return merged.sort_by("date")


def read_lake(
    lake: Lake, symbol: str, start: dt.date | None, end: dt.date | None, limit: int | None
) -> list[dict[str, Any]]:
    """Rows of the lake in the range (the last ``limit`` of them), ascending by date."""
    table = lake_history(lake, symbol, start, end)
    if limit is not None and table.num_rows > limit:
        table = table.slice(table.num_rows - limit)
    return list(table.select(list(COLUMNS)).to_pylist())


def symbol_in_lake(lake: Lake, symbol: str) -> bool:
    """True when the lake holds any bronze file of ``symbol``."""
    return bool(lake.list(layout.symbol_dir(symbol), suffix=".parquet"))
