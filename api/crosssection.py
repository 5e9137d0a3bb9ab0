"""One date across many symbols (or the whole market): each symbol's bar in effect that day.

Daily: Postgres' rows of that date (when it lies in the cache window) merged with the lake's
under the precedence rule, per symbol, as single-symbol reads do. The lake side reads every
``data.parquet`` with DuckDB (row-group statistics skip all but the date's group) and, for
symbols whose data.parquet lacks the date, the fragments covering it, screened by the same rules
as consolidation so a row it quarantined is never served.

Fibonacci: the silver bars with ``start_date <= date <= end_date``; a 34-session bar starts at
most about seven weeks earlier, so only the date's month file and the two before it are read.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, Final

import duckdb
import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc

from api import daily, fibonacci
from core import adjustments as adj
from core import layout, precedence, validation
from core.lake import Lake, LakeError
from core.schemas import BRONZE_DAILY, conform

DAILY_OF: Final = pa.schema([pa.field("symbol", pa.string()), *daily.MERGED])
FIB_OF: Final = pa.schema([pa.field("symbol", pa.string()), *fibonacci.EMPTY])
_PG: Final = """
SELECT symbol, date, open, high, low, close, volume, vwap, transactions, source, ingested_at
FROM raw_ohlcv WHERE date = %(day)s AND (%(all)s OR symbol = ANY(%(symbols)s)) ORDER BY symbol
"""
_COLS: Final = ", ".join(DAILY_OF.names)


def _paths(lake: Lake, keys: Sequence[str]) -> list[str]:
    return [lake.path(k) if lake.is_local else lake.uri(k) for k in keys]


def postgres_rows(
    conn: psycopg.Connection[Any], day: dt.date, symbols: Sequence[str] | None
) -> pa.Table:
    """raw_ohlcv's rows of ``day`` (for ``symbols``, or all), as :data:`DAILY_OF`."""
    params = {"day": day, "all": symbols is None, "symbols": list(symbols or [])}
    return daily.pg_table(conn, _PG, params, DAILY_OF)


def _bronze_files(lake: Lake, symbols: Sequence[str] | None) -> list[str]:
    if symbols is None:
        return [e.key for e in lake.list(layout.DAILY, suffix=".parquet")]
    keys: list[str] = []
    for s in symbols:
        keys.extend(e.key for e in lake.list(layout.symbol_dir(s), suffix=".parquet"))
    return keys


def lake_rows(
    con: duckdb.DuckDBPyConnection, lake: Lake, day: dt.date, symbols: Sequence[str] | None
) -> pa.Table:
    """The lake's row of ``day`` per symbol (data.parquet, else screened fragments)."""
    keys = _bronze_files(lake, symbols)
    data = [k for k in keys if k.endswith("/data.parquet")]
    frags = [k for k in keys if (p := layout.parse_fragment(k)) is not None and p[1] <= day <= p[2]]
    parts = []
    try:
        if data:
            sql = f"SELECT {_COLS} FROM read_parquet($p, union_by_name=true) WHERE date = $d"
            parts.append(fibonacci.arrow(con, sql, {"p": _paths(lake, data), "d": day}))
        if frags:
            sql = "SELECT * FROM read_parquet($p, union_by_name=true) WHERE date = $d"
            raw = fibonacci.arrow(con, sql, {"p": _paths(lake, frags), "d": day})
            raw = conform(raw, BRONZE_DAILY)
            bad, _ = validation.judge(raw)
            parts.append(raw.filter(pa.array(~bad)).select(DAILY_OF.names))
    except duckdb.IOException as exc:
        msg = f"cannot read bronze of {lake.url}: {exc}"
        raise LakeError(msg) from exc
    if not parts:
        return DAILY_OF.empty_table()
    table = pa.concat_tables([p.cast(DAILY_OF) for p in parts])
    if len(parts) > 1:  # fragments only for symbols data.parquet lacks on that day
        have = pc.is_in(table["symbol"], parts[0]["symbol"])
        is_frag = np.arange(table.num_rows) >= parts[0].num_rows
        table = table.filter(pa.array(~(is_frag & have.to_numpy(zero_copy_only=False))))
    if symbols is not None:
        table = table.filter(pc.is_in(table["symbol"], pa.array(list(symbols), pa.string())))
    return table


def merge_by_symbol(parts: dict[str, pa.Table]) -> pa.Table:
    """One row per symbol under the precedence rule, with ``origin``, sorted by symbol.

    The rule picks a winner per date; here every row has the same date, so each symbol is given
    its own stand-in date for the grouping and the original rows are taken back.
    """
    names = [n for n, t in parts.items() if t.num_rows]
    tables = [parts[n].cast(DAILY_OF) for n in names]
    if not tables:
        return DAILY_OF.empty_table().append_column("origin", pa.array([], pa.string()))
    both = pa.concat_tables(tables).combine_chunks()
    origin = np.concatenate([np.full(t.num_rows, i, dtype=np.int8) for i, t in enumerate(tables)])
    codes = pc.dictionary_encode(both["symbol"]).combine_chunks().indices
    keyed = both.set_column(
        both.schema.get_field_index("date"),
        "date",
        pc.cast(pc.cast(codes, pa.int32()), pa.date32()),
    )
    idx = precedence.winners(keyed)
    labels = np.asarray(names, dtype=object)[origin[idx]]
    out = both.take(idx).append_column("origin", pa.array(labels, pa.string()))
    return out.sort_by("symbol")


def split_adjust(table: pa.Table, day: dt.date, book: adj.SplitBook) -> pa.Table:
    """Daily rows of one date split-adjusted per symbol: prices x S(day), volume / S(day)."""
    if table.num_rows == 0 or not book.by_symbol:
        return table
    symbols = table["symbol"].to_pylist()
    when = [adj.to_days(day)]
    factor = np.array([float(adj.split_factors(when, book.of(s))[0]) for s in symbols])
    if np.all(factor == 1.0):
        return table
    for name in ("open", "high", "low", "close", "vwap"):
        scaled = pc.multiply(table[name], pa.array(factor))
        table = table.set_column(table.schema.get_field_index(name), name, scaled)
    volume = pc.divide(table["volume"], pa.array(factor))
    return table.set_column(table.schema.get_field_index("volume"), "volume", volume)


def fib_rows(
    con: duckdb.DuckDBPyConnection,
    lake: Lake,
    interval: int,
    day: dt.date,
    symbols: Sequence[str] | None,
) -> pa.Table:
    """Silver bars of ``interval`` covering ``day``, by symbol, as :data:`FIB_OF`."""
    first = (day.replace(day=1) - dt.timedelta(days=62)).replace(day=1)
    keys = fibonacci.month_keys(lake, interval, first, day)
    if not keys:
        return FIB_OF.empty_table()
    sql = (
        f"SELECT {', '.join(FIB_OF.names)} FROM read_parquet($p) "
        "WHERE start_date <= $d AND end_date >= $d"
    )
    params: dict[str, object] = {"p": _paths(lake, keys), "d": day}
    if symbols is not None:
        sql += " AND list_contains($s, symbol)"
        params["s"] = list(symbols)
    try:
        table = fibonacci.arrow(con, sql + " ORDER BY symbol", params)
    except duckdb.IOException as exc:
        msg = f"cannot read silver {interval}d of {lake.url}: {exc}"
        raise LakeError(msg) from exc
    return table.cast(FIB_OF)
