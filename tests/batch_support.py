"""Helpers for the batch tests: bronze fragments, silver snapshots, and reference bars.

The reference here is written from the contract text (ARCHITECTURE.md, "Fibonacci bar
semantics" and "Lake contract"), with plain Python loops and a bisect over the session list,
sharing no code with ``batch.engine.fib`` or ``core.precedence``.
"""

from __future__ import annotations

import bisect
import datetime as dt
import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import pyarrow as pa
import pyarrow.parquet as pq

from core import calendar, layout
from core.lake import Lake
from core.schemas import BRONZE_DAILY

T0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Row:
    """One bronze daily row."""

    symbol: str
    date: dt.date
    open: float
    high: float
    low: float
    close: float
    volume: float
    source: str = "rest"
    ingested: int = 0  # seconds after T0
    vwap: float | None = None
    transactions: int | None = None


def table_of(rows: Sequence[Row]) -> pa.Table:
    return pa.table(
        {
            "symbol": [r.symbol for r in rows],
            "date": [r.date for r in rows],
            "open": [r.open for r in rows],
            "high": [r.high for r in rows],
            "low": [r.low for r in rows],
            "close": [r.close for r in rows],
            "volume": [r.volume for r in rows],
            "vwap": pa.array([r.vwap for r in rows], pa.float64()),
            "transactions": pa.array([r.transactions for r in rows], pa.int64()),
            "source": [r.source for r in rows],
            "ingested_at": [T0 + dt.timedelta(seconds=r.ingested) for r in rows],
        }
    ).cast(BRONZE_DAILY)


def fragment_key(rows: Sequence[Row]) -> str:
    dates = sorted(r.date for r in rows)
    if len(rows) == 1:
        return layout.daily_fragment(rows[0].symbol, dates[0])
    return layout.range_fragment(rows[0].symbol, dates[0], dates[-1])


def write_fragment(lake: Lake, rows: Sequence[Row], key: str | None = None) -> str:
    key = key or fragment_key(rows)
    lake.write_table(key, table_of(rows))
    return key


def simple_rows(
    symbol: str, days: Iterable[dt.date], base: float = 10.0, **kw: object
) -> list[Row]:
    out = []
    for i, d in enumerate(days):
        p = base + i
        out.append(Row(symbol, d, p, p + 2, p - 1, p + 1, float(100 + i), **kw))  # type: ignore[arg-type]
    return out


def snapshot(lake: Lake, prefix: str = "silver") -> dict[str, str]:
    """Key -> digest of every file under ``prefix``."""
    return {e.key: hashlib.sha256(lake.read_bytes(e.key)).hexdigest() for e in lake.list(prefix)}


def read_silver(lake: Lake, interval: int) -> dict[tuple[int, int], list[tuple[object, ...]]]:
    """(year, month) -> rows of that month file, in file order."""
    out = {}
    for e in lake.list(layout.silver_dir(interval), suffix=".parquet"):
        stamp = e.key.rsplit("_", 1)[-1].removesuffix(".parquet")
        t = pq.read_table(lake.path(e.key))
        out[(int(stamp[:4]), int(stamp[4:]))] = [tuple(r.values()) for r in t.to_pylist()]
    return out


# -- the reference ---------------------------------------------------------------------------
@lru_cache(maxsize=1)
def sessions() -> list[dt.date]:
    return calendar.sessions_between(calendar.EPOCH, calendar.HORIZON)


def window(first: dt.date, count: int) -> list[dt.date]:
    """``count`` sessions from ``first`` on."""
    i = calendar.session_index(first)
    return sessions()[i : i + count]


_RANK = {"rest": 3, "flatfile": 2, "export": 1, "live": 0}


def reference_merge(rows: Iterable[Row]) -> dict[str, list[Row]]:
    """One row per (symbol, date): drop live where rest exists, then the newest ingested_at."""
    by_key: dict[tuple[str, dt.date], list[Row]] = defaultdict(list)
    for r in rows:
        by_key[(r.symbol, r.date)].append(r)
    out: dict[str, list[Row]] = defaultdict(list)
    for (symbol, _), cands in sorted(by_key.items()):
        if any(c.source == "rest" for c in cands):
            cands = [c for c in cands if c.source != "live"]
        best = max(cands, key=lambda c: (c.ingested, _RANK[c.source], c.close, c.open))
        out[symbol].append(best)
    return dict(out)


def reference_bars(
    history: dict[str, list[Row]], interval: int, anchor: str
) -> dict[tuple[int, int], list[tuple[object, ...]]]:
    """Silver straight from the contract: (year, month) of start_date -> rows sorted."""
    all_sessions = sessions()
    lake_last = max(r.date for rows in history.values() for r in rows)
    months: dict[tuple[int, int], list[tuple[object, ...]]] = defaultdict(list)
    for symbol in sorted(history):
        rows = sorted(history[symbol], key=lambda r: r.date)
        groups: dict[int, list[Row]] = defaultdict(list)
        for position, r in enumerate(rows):
            # calendar: the number of sessions s with s < date; symbol: the row's position
            k = bisect.bisect_left(all_sessions, r.date) if anchor == "calendar" else position
            groups[k // interval].append(r)
        for g in sorted(groups):
            members = groups[g]
            volume = 0.0
            for m in members:
                volume += m.volume
            if anchor == "calendar":
                complete = all_sessions[(g + 1) * interval - 1] <= lake_last
            else:
                complete = len(members) == interval
            start = members[0].date
            months[(start.year, start.month)].append(
                (
                    symbol,
                    start,
                    members[-1].date,
                    members[0].open,
                    max(m.high for m in members),
                    min(m.low for m in members),
                    members[-1].close,
                    volume,
                    len(members),
                    complete,
                )
            )
    return dict(months)
