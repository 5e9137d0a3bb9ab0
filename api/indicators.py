"""Gold indicators from the lake: one symbol's history, or every symbol on one date.

Month files are named for the month of the bar's ``date`` (1d) or ``start_date``, so a date
range, and the span of the symbol's own history, skip whole files by name; DuckDB pushes the
symbol and date filters into the scan of the rest (as for silver, :mod:`api.fibonacci`).
"""

from __future__ import annotations

import datetime as dt
from typing import Final

import duckdb
import pyarrow as pa

from api.fibonacci import history_span, month_keys_in
from core import duck, layout
from core.lake import Lake, LakeError
from core.schemas import gold_schema

CROSS_SECTION_BACK: Final = dt.timedelta(days=100)
"""How far before a date a Fibonacci bar covering it may start (34 sessions and long halts)."""


def key_of(interval: str) -> str:
    """The date column bars are filed and filtered by."""
    return "date" if interval == "1d" else "start_date"


def _columns(interval: str, *, symbol: bool) -> str:
    names = [f.name for f in gold_schema(interval) if symbol or f.name != "symbol"]
    return ", ".join(names)  # from the schema, never from the request


def _run(lake: Lake, interval: str, sql: str, params: dict[str, object]) -> pa.Table:
    try:
        with duck.connect(lake) as con:
            table: pa.Table = con.sql(sql, params=params).to_arrow_table()
            return table
    except duckdb.IOException as exc:
        msg = f"cannot read gold {interval} of {lake.url}: {exc}"
        raise LakeError(msg) from exc


def _paths(lake: Lake, keys: list[str]) -> list[str]:
    return [lake.path(k) if lake.is_local else lake.uri(k) for k in keys]


def read_symbol(
    lake: Lake,
    symbol: str,
    interval: str,
    start: dt.date | None,
    end: dt.date | None,
    limit: int | None,
) -> pa.Table:
    """Rows of ``symbol`` with their date in [start, end] (the last ``limit``), ascending."""
    schema = gold_schema(interval).remove(0)
    lo, hi = start, end
    if span := history_span(lake, symbol):
        lo = max(lo, span[0]) if lo else span[0]
        hi = min(hi, span[1]) if hi else span[1]
        if hi < lo:
            return schema.empty_table()
    keys = month_keys_in(lake, layout.gold_dir(interval), lo, hi)
    if not keys:
        return schema.empty_table()
    key = key_of(interval)
    sql = f"SELECT {_columns(interval, symbol=False)} FROM read_parquet($paths) WHERE symbol = $symbol"
    params: dict[str, object] = {"paths": _paths(lake, keys), "symbol": symbol}
    if start is not None:
        sql += f" AND {key} >= $start"
        params["start"] = start
    if end is not None:
        sql += f" AND {key} <= $end"
        params["end"] = end
    if limit is not None:
        sql = f"SELECT * FROM ({sql} ORDER BY {key} DESC LIMIT $limit) ORDER BY {key}"
        params["limit"] = limit
    else:
        sql += f" ORDER BY {key}"
    return _run(lake, interval, sql, params).cast(schema)


def read_date(lake: Lake, interval: str, day: dt.date) -> pa.Table:
    """Every symbol's row for ``day``: its daily bar, or the Fibonacci bar covering the date."""
    schema = gold_schema(interval)
    first = day if interval == "1d" else day - CROSS_SECTION_BACK
    keys = month_keys_in(lake, layout.gold_dir(interval), first, day)
    if not keys:
        return schema.empty_table()
    where = "date = $day" if interval == "1d" else "start_date <= $day AND end_date >= $day"
    sql = (
        f"SELECT {_columns(interval, symbol=True)} FROM read_parquet($paths)"
        f" WHERE {where} ORDER BY symbol"
    )
    return _run(lake, interval, sql, {"paths": _paths(lake, keys), "day": day}).cast(schema)
