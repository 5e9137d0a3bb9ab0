"""Intraday bars for ``GET /v1/bars/{symbol}?interval=1m|5m|15m|30m|1h|2h|4h``.

Consolidated sessions are read from the lake with one symbol's rows only (1m: from the
symbol's month files kept beside the sessions, twelve reads a year, and from the session files,
through their cached footers, for any session a month file cannot vouch for; 5m..4h: statistics
pruning over many session files at once); the most recent sessions, whose fragments the live
flow is still writing, are merged on read under the minute precedence rule (rest beats live, the
higher revision, a partial bar never wins), and their 5m..4h bars are rolled up on read with the
same function as silver. Bars are served as traded (no split adjustment).
"""

from __future__ import annotations

import datetime as dt
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
from pydantic import BaseModel

from core import calendar, intraday, layout, minutes_by_symbol, precedence, symbol_groups
from core.lake import Lake
from core.schemas import BRONZE_MINUTE, SILVER_INTRADAY, conform

INTERVALS: Final = ("1m", *intraday.INTERVALS)
RECENT_DAYS: Final = 4
"""Sessions this close to today are merged with their unconsolidated fragments."""
DEFAULT_SPAN: Final = dt.timedelta(days=31)
"""Without ``start``, bars of the last month (or the last ``limit``)."""
When = dt.date | dt.datetime


class MinuteBarOut(BaseModel):
    """One minute bar (window start, UTC), as traded."""

    start: dt.datetime
    open: float
    high: float
    low: float
    close: float
    volume: float
    vwap: float | None
    trades: int
    source: str
    revision: int
    partial: bool


class IntradayBar(BaseModel):
    """One 5m..4h bar: [start, end) of the regular session, ``minutes`` minute bars in it."""

    start: dt.datetime
    end: dt.datetime
    open: float
    high: float
    low: float
    close: float
    volume: float
    vwap: float | None
    trades: int
    minutes: int
    complete: bool


def _day(w: When) -> dt.date:
    return w.astimezone(calendar.NEW_YORK).date() if isinstance(w, dt.datetime) else w


def _utc(w: dt.datetime) -> dt.datetime:
    return w if w.tzinfo is not None else w.replace(tzinfo=dt.UTC)


def sessions(lake: Lake, first: dt.date, last: dt.date) -> list[dt.date]:
    """Sessions in [first, last] with a minute folder."""
    days = (layout.minute_session(d) for d in lake.list_dirs(layout.MINUTE))
    return sorted(d for d in days if d is not None and first <= d <= last)


def _consolidated(lake: Lake, days: list[dt.date]) -> dict[dt.date, pafs.FileInfo]:
    """The sessions whose consolidated file exists, with its size and time (one stat each)."""
    infos = lake.fs.get_file_info([lake.path(layout.minute_consolidated(d)) for d in days])
    return {d: i for d, i in zip(days, infos, strict=True) if i.type == pafs.FileType.File}


def _read(
    lake: Lake, keys: list[str], symbol: str, columns: list[str], schema: pa.Schema
) -> pa.Table:
    if not keys:
        return schema.empty_table().select(columns)
    ds = pads.dataset([lake.path(k) for k in keys], format="parquet", filesystem=lake.fs)
    return ds.to_table(columns=columns, filter=pads.field("symbol") == symbol)


def _recent_minutes(lake: Lake, day: dt.date, symbol: str) -> pa.Table:
    """A session's consolidated minutes merged with the fragments written since."""
    keys = [e.key for e in lake.list(layout.minute_dir(day) + "/", suffix=".parquet")]
    t = _read(lake, keys, symbol, list(BRONZE_MINUTE.names), BRONZE_MINUTE)
    return conform(t, BRONZE_MINUTE).take(precedence.minute_winners(conform(t, BRONZE_MINUTE)))


def read_table(
    lake: Lake,
    symbol: str,
    interval: str,
    start: When | None,
    end: When | None,
    limit: int | None,
    *,
    now: dt.datetime | None = None,
) -> pa.Table:
    """Bars ascending by start; ``limit`` keeps the most recent N."""
    now = now or dt.datetime.now(dt.UTC)
    last = _day(end) if end is not None else now.astimezone(calendar.NEW_YORK).date()
    first = _day(start) if start is not None else last - DEFAULT_SPAN
    days = sessions(lake, first, last)
    files = _consolidated(lake, days)
    recent = [d for d in days if d >= now.date() - dt.timedelta(days=RECENT_DAYS) or d not in files]
    old = [d for d in days if d not in recent]
    if interval == "1m":
        cols = ["start", "open", "high", "low", "close", "volume", "vwap", "trades",
                "source", "revision", "partial"]  # fmt: skip
        pieces, elsewhere = minutes_by_symbol.read_symbol(
            lake, symbol, {d: files[d] for d in old}, cols
        )
        read = symbol_groups.read_symbol_many(lake.fs, [files[d] for d in elsewhere], symbol, cols)
        pieces += zip(elsewhere, read, strict=True)
        pieces += [(d, _recent_minutes(lake, d, symbol).select(cols)) for d in recent]
        pieces.sort(key=lambda p: p[0])
        parts = [BRONZE_MINUTE.empty_table().select(cols), *(t for _, t in pieces)]
    else:
        cols = [n for n in SILVER_INTRADAY.names if n != "symbol"]
        keys = [k for d in old if lake.exists(k := layout.intraday_file(interval, d))]
        built = {layout.minute_session(k) for k in keys}
        parts = [_read(lake, keys, symbol, cols, SILVER_INTRADAY)]
        for d in [d for d in days if d not in built]:
            minutes = _recent_minutes(lake, d, symbol)
            close = calendar.session_close(d)
            horizon = close if now >= close else _newest(minutes)
            micros = int(horizon.timestamp() * 1_000_000) if horizon else 0
            parts.append(intraday.rollup(minutes, interval, horizon_us=micros).select(cols))
    schema = parts[0].schema
    table = pa.concat_tables([p if p.schema.equals(schema) else p.cast(schema) for p in parts])
    if not _ascending(table["start"]):  # parts come session by session, each in order
        table = table.sort_by("start")
    if isinstance(start, dt.datetime):
        table = table.filter(pc.greater_equal(table["start"], pa.scalar(_utc(start))))
    if isinstance(end, dt.datetime):
        table = table.filter(pc.less_equal(table["start"], pa.scalar(_utc(end))))
    if limit is not None and table.num_rows > limit:
        table = table.slice(table.num_rows - limit)
    return table


def _ascending(starts: pa.ChunkedArray) -> bool:
    values = pc.cast(starts, pa.int64()).to_numpy()
    return bool(np.all(values[1:] > values[:-1]))


def _newest(minutes: pa.Table) -> dt.datetime | None:
    newest = pc.max(minutes["start"]).as_py() if minutes.num_rows else None
    return newest + dt.timedelta(minutes=1) if newest is not None else None
