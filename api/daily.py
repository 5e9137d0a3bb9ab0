"""Daily bars of one symbol: Postgres and the lake merged, so either can fill the other's gaps.

Postgres keeps the last five years and a month (the cache window); the lake keeps everything.
A read takes the range from both (Postgres only when the range reaches into its window) and
merges them by date under the lake's precedence rule (core.precedence: newer ``ingested_at``
wins, ``live`` never replaces ``rest``), so a row missing in one source comes from the other and
the answer does not depend on which is asked. :func:`merge_sources` also counts the rows each
source served, which the API reports.

The lake side is the consolidated ``data.parquet`` plus any fragments newer than its last
date (sessions not consolidated yet), merged under the same rule. Without a data.parquet every
fragment is merged.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import psycopg
import pyarrow as pa
import pyarrow.compute as pc

from core import layout, precedence
from core.lake import Lake
from core.schemas import BRONZE_DAILY, conform

COLUMNS: Final = (
    "date", "open", "high", "low", "close", "volume", "vwap", "transactions", "source",
)  # fmt: skip
"""What the API serves of a daily row."""
_MERGE_COLUMNS: Final = (*COLUMNS, "ingested_at")
MERGED: Final = pa.schema([BRONZE_DAILY.field(c) for c in _MERGE_COLUMNS])
"""A daily row as both sources give it: what the precedence rule needs."""
_PG_SELECT: Final = (
    "SELECT date, open, high, low, close, volume, vwap, transactions, source, ingested_at"
    " FROM raw_ohlcv WHERE symbol = %(symbol)s"
)


def pg_query(*, start: bool, end: bool, limit: bool) -> str:
    """The raw_ohlcv query from fixed parts: only the filters used, so the primary key is used.

    (``%(start)s IS NULL OR date >= ...`` would leave a prepared statement's generic plan
    scanning every row of the symbol.)
    """
    sql = _PG_SELECT + (" AND date >= %(start)s" if start else "")
    sql += " AND date <= %(end)s" if end else ""
    if limit:
        return f"SELECT * FROM ({sql} ORDER BY date DESC LIMIT %(limit)s) AS recent ORDER BY date"
    return sql + " ORDER BY date"


def window_start(today: dt.date, window_days: int) -> dt.date:
    """The first date Postgres may hold."""
    return today - dt.timedelta(days=window_days)


def postgres_may_hold(end: dt.date | None, today: dt.date, window_days: int) -> bool:
    """False when the range ends before the cache window: Postgres has nothing to add."""
    return end is None or end >= window_start(today, window_days)


def read_postgres(
    conn: psycopg.Connection[Any],
    symbol: str,
    start: dt.date | None,
    end: dt.date | None,
    limit: int | None,
) -> pa.Table:
    """Rows of raw_ohlcv in the range (the last ``limit`` of them), ascending, as :data:`MERGED`."""
    params = {"symbol": symbol, "start": start, "end": end, "limit": limit}
    sql = pg_query(start=start is not None, end=end is not None, limit=limit is not None)
    return pg_table(conn, sql, params, MERGED)


def pg_table(
    conn: psycopg.Connection[Any], sql: str, params: Mapping[str, object], schema: pa.Schema
) -> pa.Table:
    """The rows of a query as ``schema`` (empty when raw_ohlcv does not exist yet)."""
    try:
        rows = conn.execute(sql, params).fetchall()
    except psycopg.errors.UndefinedTable:
        return schema.empty_table()
    if not rows:
        return schema.empty_table()
    columns = list(zip(*rows, strict=True))
    return pa.table(
        [pa.array(col, type=schema.field(i).type) for i, col in enumerate(columns)], schema=schema
    )


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
) -> pa.Table:
    """Rows of the lake in the range (the last ``limit`` of them), ascending, as :data:`MERGED`."""
    table = lake_history(lake, symbol, start, end)
    if limit is not None and table.num_rows > limit:
        table = table.slice(table.num_rows - limit)
    return table.select(list(_MERGE_COLUMNS))


def _days(table: pa.Table) -> npt.NDArray[np.int32]:
    return np.asarray(pc.cast(table["date"], pa.int32()).to_numpy(), dtype=np.int32)


def _same_rows(a: pa.Table, b: pa.Table) -> npt.NDArray[np.bool_]:
    """Row by row: True where ``a[i]`` and ``b[i]`` hold the same values (nulls equal)."""
    same = np.ones(a.num_rows, dtype=bool)
    for name in _MERGE_COLUMNS[1:]:
        x, y = a[name], b[name]
        eq = pc.or_(pc.fill_null(pc.equal(x, y), False), pc.and_(pc.is_null(x), pc.is_null(y)))
        same &= np.asarray(eq.to_numpy(zero_copy_only=False), dtype=bool)
    return same


def _merge_two(earlier: pa.Table, later: pa.Table) -> pa.Table:
    """One row per date of two sources (each one row per date), ``later`` winning ties.

    Most dates are either in one source only or the same row in both; only dates whose rows
    differ go through the precedence rule, so a merge costs a few vector operations.
    """
    a_days, b_days = _days(earlier), _days(later)
    pos = np.clip(np.searchsorted(b_days, a_days), 0, max(len(b_days) - 1, 0))
    shared = (b_days[pos] == a_days) if len(b_days) else np.zeros(len(a_days), dtype=bool)
    same = np.zeros(len(a_days), dtype=bool)
    if shared.any():
        idx = np.flatnonzero(shared)
        same[idx] = _same_rows(earlier.take(idx), later.take(pos[idx]))
    differ = shared & ~same
    keep_a = ~shared  # dates only the earlier source has
    contested_b = np.zeros(len(b_days), dtype=bool)
    contested_b[pos[differ]] = True
    parts = [earlier.filter(pa.array(keep_a)), later.filter(pa.array(~contested_b))]
    if differ.any():
        both = pa.concat_tables([earlier.filter(pa.array(differ)), later.filter(contested_b)])
        parts.append(both.take(precedence.winners(both)))
    merged = pa.concat_tables(parts)
    return merged.take(np.argsort(_days(merged), kind="stable"))


def merge_sources(parts: Mapping[str, pa.Table]) -> pa.Table:
    """One row per date from every source's rows: the precedence rule's winner.

    An ``origin`` column names the source that served each row. Ties (the same row in both)
    go to the later source in ``parts``.
    """
    tables = [
        t.select(list(_MERGE_COLUMNS))
        .cast(MERGED)
        .append_column("origin", pa.array([name] * t.num_rows, pa.string()))
        for name, t in parts.items()
        if t.num_rows
    ]
    if not tables:
        return MERGED.empty_table().append_column("origin", pa.array([], pa.string()))
    merged = tables[0]
    for later in tables[1:]:
        merged = _merge_two(merged, later)
    return merged


def served_by(table: pa.Table) -> dict[str, int]:
    """Rows per source in a merged table's ``origin`` column."""
    if table.num_rows == 0:
        return {}
    counts = pc.value_counts(table["origin"]).to_pylist()
    return {str(c["values"]): int(c["counts"]) for c in sorted(counts, key=lambda c: c["values"])}


def symbol_in_lake(lake: Lake, symbol: str) -> bool:
    """True when the lake holds any bronze file of ``symbol``."""
    return bool(lake.list(layout.symbol_dir(symbol), suffix=".parquet"))
