"""Intraday bars (5m to 4h) from minute bars: the one rollup batch silver and the live flow share.

Regular session only: bar k of a session covers [open + k*I, open + (k+1)*I), the last one cut
at the XNYS close (13:00 New York on early-close days). A bar takes the open of its first
minute, the close of its last, the highest high, the lowest low, the summed volume and trades,
``vwap`` as the volume-weighted mean of its minutes' vwap (minutes without one are left out of
both sums; null when none has one), ``minutes`` the minute bars in it. A window with no minute
bar has no bar. ``complete``: the window has ended by the horizon the caller knows (the session's
close once it is over, the newest minute held while it is not, the watermark live), so the bar
can no longer gain minutes.

Live and batch reduce the same minute rows with :func:`reduce_sorted` (batch through
:func:`rollup`, the live flow from the columns it holds) and get the same bits: every sum is a
numpy reduction over one bar's minutes in time order, whatever else the rows hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from core import calendar
from core.schemas import SILVER_INTRADAY

INTERVALS: Final = {"5m": 5, "15m": 15, "30m": 30, "1h": 60, "2h": 120, "4h": 240}
"""Intraday intervals by name, in minutes."""
MINUTE_US: Final = 60_000_000
I64 = npt.NDArray[np.int64]


class IntervalError(ValueError):
    """An interval name outside :data:`INTERVALS`."""


def interval_us(name: str) -> int:
    """The width of an interval in microseconds."""
    if name not in INTERVALS:
        msg = f"unknown interval {name!r}; choose from {', '.join(INTERVALS)}"
        raise IntervalError(msg)
    return INTERVALS[name] * MINUTE_US


def parse_intervals(text: str) -> list[str]:
    """A comma-separated list of interval names, in :data:`INTERVALS` order."""
    names = {x.strip() for x in text.split(",") if x.strip()}
    for n in names:
        interval_us(n)
    return [n for n in INTERVALS if n in names]


def session_bounds(days: npt.NDArray[np.int32]) -> tuple[I64, I64, npt.NDArray[np.bool_]]:
    """(open us, close us, is a session) of date32 ``days``."""
    table = calendar.sessions()
    idx = np.clip(np.searchsorted(table.days, days), 0, len(table.days) - 1)
    ok = table.days[idx] == days
    return table.opens[idx] // 1000, table.closes[idx] // 1000, ok


def windows(
    start_us: I64, days: npt.NDArray[np.int32], width_us: int
) -> tuple[I64, I64, npt.NDArray[np.bool_]]:
    """(bar start, bar end, regular) of minutes starting at ``start_us`` on sessions ``days``."""
    opens, closes, ok = session_bounds(days)
    regular = ok & (start_us >= opens) & (start_us < closes)
    k = (start_us - opens) // width_us
    begin = opens + k * width_us
    return begin, np.minimum(begin + width_us, closes), regular


def _floats(col: pa.ChunkedArray | pa.Array) -> npt.NDArray[np.float64]:
    return np.asarray(pc.fill_null(col, np.nan).to_numpy(zero_copy_only=False), np.float64)


def rollup(minutes: pa.Table, interval: str, *, horizon_us: int | None = None) -> pa.Table:
    """SILVER_INTRADAY bars of ``minutes`` (one row per symbol and start), sorted by both.

    ``horizon_us``: bars ending at or before it are complete (None: every window has ended).
    """
    width = interval_us(interval)
    if minutes.num_rows == 0:
        return SILVER_INTRADAY.empty_table()
    t = minutes.sort_by([("symbol", "ascending"), ("start", "ascending")])
    start = t["start"].cast(pa.int64()).to_numpy()
    days = np.asarray(t["date"].cast(pa.int32()).to_numpy(), np.int32)
    begin, end, regular = windows(start, days, width)
    if not regular.all():
        keep = np.flatnonzero(regular)
        t, begin, end = t.take(pa.array(keep)), begin[keep], end[keep]
    n = t.num_rows
    if n == 0:
        return SILVER_INTRADAY.empty_table()
    codes = pc.dictionary_encode(t["symbol"]).combine_chunks().indices.to_numpy()
    trades = np.asarray(pc.fill_null(t["trades"], 0).to_numpy(), np.int64)
    r = reduce_sorted(codes, begin, _floats(t["high"]), _floats(t["low"]), _floats(t["volume"]),
                      _floats(t["vwap"]), trades)  # fmt: skip
    firsts = pa.array(r.firsts)
    horizon = np.iinfo(np.int64).max if horizon_us is None else horizon_us
    bar_end = end[r.firsts]
    cols: dict[str, pa.Array | pa.ChunkedArray] = {
        "symbol": t["symbol"].take(firsts),
        "start": pa.array(begin[r.firsts], pa.int64()).cast(SILVER_INTRADAY.field("start").type),
        "end": pa.array(bar_end, pa.int64()).cast(SILVER_INTRADAY.field("end").type),
        "open": t["open"].take(firsts),
        "high": pa.array(r.high),
        "low": pa.array(r.low),
        "close": t["close"].take(pa.array(r.lasts)),
        "volume": pa.array(r.volume),
        "vwap": pa.array(r.vwap, pa.float64(), from_pandas=True),
        "trades": pa.array(r.trades),
        "minutes": pa.array(r.minutes),
        "complete": pa.array(bar_end <= horizon),
    }
    return pa.table(
        [pa.chunked_array([c]) if isinstance(c, pa.Array) else c for c in cols.values()],
        names=list(cols),
    ).cast(SILVER_INTRADAY)


F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Reduced:
    """The bars of minute rows sorted by symbol and start: where each starts and ends, its sums."""

    firsts: I64
    """Row of each bar's first minute (its open)."""
    lasts: I64
    """Row of each bar's last minute (its close)."""
    high: F64
    low: F64
    volume: F64
    vwap: F64
    """NaN where no minute has a vwap."""
    trades: I64
    minutes: npt.NDArray[np.int32]


def reduce_sorted(
    codes: npt.NDArray[np.integer[Any]], begin: I64, high: F64, low: F64, volume: F64,
    vwap: F64, trades: I64,
) -> Reduced:  # fmt: skip
    """The batch rule's sums over rows sorted by symbol (``codes``) and start.

    ``begin``: each row's window start. The one arithmetic of :func:`rollup` and the live flow's
    final bars, which hold their minutes as arrays already (NaN ``vwap``: none).
    """
    n = len(codes)
    new = np.ones(n, bool)
    new[1:] = (codes[1:] != codes[:-1]) | (begin[1:] != begin[:-1])
    firsts = np.flatnonzero(new)
    lasts = np.append(firsts[1:], n) - 1
    has = ~np.isnan(vwap)
    den = np.add.reduceat(np.where(has, volume, 0.0), firsts)
    num = np.add.reduceat(np.where(has, vwap * volume, 0.0), firsts)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(den > 0, num / den, np.nan)
    return Reduced(
        firsts=firsts,
        lasts=lasts,
        high=np.maximum.reduceat(high, firsts),
        low=np.minimum.reduceat(low, firsts),
        volume=np.add.reduceat(volume, firsts),
        vwap=mean,
        trades=np.add.reduceat(trades, firsts),
        minutes=(lasts - firsts + 1).astype(np.int32),
    )
