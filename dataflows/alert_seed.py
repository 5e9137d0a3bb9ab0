"""History for the live alert engine: each watched (symbol, timeframe) seeded from the lake.

Minute bars of the most recent sessions are read the way the API reads them (the consolidated
file and the live flow's fragments since, merged under the minute precedence rule), and 5m..4h
bars rolled up from them with :func:`core.intraday.rollup`, the function silver and the live
rollups use; only complete windows are kept, so the first live bar after the seed is the next
one. Walking back stops at ``bars`` bars per series or :data:`MAX_SESSIONS` sessions.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterable
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from core import intraday, layout, precedence
from core.alert_engine import BarSeries
from core.lake import Lake
from core.schemas import BRONZE_MINUTE, conform

log = logging.getLogger(__name__)
MAX_SESSIONS: Final = 60
Pair = tuple[str, str]


def _sessions(lake: Lake) -> list[str]:
    """Minute session folders, newest first."""
    days = [layout.minute_session(d) for d in lake.list_dirs(layout.MINUTE)]
    return [layout.minute_dir(d) for d in sorted((d for d in days if d is not None), reverse=True)]


def _minutes(lake: Lake, folder: str, symbols: list[str]) -> pa.Table:
    keys = [e.key for e in lake.list(folder + "/", suffix=".parquet")]
    if not keys:
        return BRONZE_MINUTE.empty_table()
    ds = pads.dataset([lake.path(k) for k in keys], format="parquet", filesystem=lake.fs)
    t = conform(ds.to_table(filter=pads.field("symbol").isin(symbols)), BRONZE_MINUTE)
    return t.take(precedence.minute_winners(t))


def _bars(minutes: pa.Table, timeframe: str) -> pa.Table:
    """Columns symbol, start, end (timestamps), high, low, close, volume of complete bars."""
    if timeframe == "1m":
        end = pc.add(minutes["start"], pa.scalar(60_000_000, pa.duration("us")))
        return pa.table(
            {
                "symbol": minutes["symbol"],
                "start": minutes["start"],
                "end": end,
                "high": minutes["high"],
                "low": minutes["low"],
                "close": minutes["close"],
                "volume": minutes["volume"],
            }
        )
    rolled = intraday.rollup(minutes, timeframe)
    rolled = rolled.filter(rolled["complete"])
    return rolled.select(["symbol", "start", "end", "high", "low", "close", "volume"])


def _per_session(timeframe: str) -> int:
    return 390 if timeframe == "1m" else max(1, 390 // intraday.INTERVALS[timeframe])


def _ms(col: pa.ChunkedArray) -> list[int]:
    return [int(x) // 1000 for x in col.cast(pa.int64()).to_pylist()]


def load(lake: Lake, pairs: Iterable[Pair], bars: int) -> dict[Pair, BarSeries]:
    """Seeded series of ``pairs`` (those with no history get none)."""
    by_tf: dict[str, set[str]] = defaultdict(set)
    for symbol, timeframe in pairs:
        if timeframe in ("1m", *intraday.INTERVALS):
            by_tf[timeframe].add(symbol)
    if not by_tf or bars <= 0:
        return {}
    folders = _sessions(lake)
    want_sessions = max(math.ceil(bars / _per_session(tf)) + 1 for tf in by_tf)
    tables: dict[str, list[pa.Table]] = defaultdict(list)
    symbols = sorted(set().union(*by_tf.values()))
    for folder in folders[: min(want_sessions, MAX_SESSIONS)]:
        minutes = _minutes(lake, folder, symbols)
        if minutes.num_rows:
            for tf, names in by_tf.items():
                got = _bars(
                    minutes.filter(pc.is_in(minutes["symbol"], pa.array(sorted(names)))), tf
                )
                tables[tf].append(got)
    out: dict[Pair, BarSeries] = {}
    for tf, parts in tables.items():
        table = pa.concat_tables(parts).sort_by([("symbol", "ascending"), ("start", "ascending")])
        syms = np.asarray(table["symbol"].to_pylist(), dtype=object)
        starts, ends = _ms(table["start"]), _ms(table["end"])
        cols = {c: table[c].to_numpy() for c in ("high", "low", "close", "volume")}
        for name in sorted(set(syms.tolist())):
            idx = np.flatnonzero(syms == name)[-bars:]
            out[(name, tf)] = BarSeries.of_history(
                tf,
                [starts[i] for i in idx],
                [ends[i] for i in idx],
                cols["high"][idx],
                cols["low"][idx],
                cols["close"][idx],
                cols["volume"][idx],
            )
    log.info("alert seeds: %d series from %d sessions", len(out), len(folders[:want_sessions]))
    return out
