"""Provisional daily bars from a partition's final minute bars (pure, no I/O, no clock).

Each final minute bar of the regular session (and each later revision of it) updates its
symbol's day: open of the first minute, close of the last, the highest high and lowest low,
summed volume, trades and notional. Once the partition's event-time watermark passes the
session's close (early closes included) plus the settle time, the day is emitted as a bronze
daily row with ``source=live``; the REST bar replaces it later (``live`` never beats ``rest``).
Its ``ingested_at`` is the close plus the settle time, so a replay writes the same row.

A revision replaces its minute's contribution, so the last few minutes' figures are kept
(``horizon_ms`` of event time: no revision comes later). A revision after its day was emitted
re-emits the day, one microsecond newer, so the newer row wins.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Final

import pyarrow as pa

from core import calendar
from core.schemas import BRONZE_DAILY

PRICE_UNITS: Final = 1_000_000
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# Day accumulator slots.
_FIRST, _OPEN, _LAST, _CLOSE, _HIGH, _LOW, _VOL, _NOTIONAL, _N = range(9)


def _ms(when: dt.datetime) -> int:
    return (when - _EPOCH) // dt.timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class DayBar:
    """A provisional daily bar of one symbol."""

    symbol: str
    date: dt.date
    open: float
    high: float
    low: float
    close: float
    volume: float
    vwap: float | None
    transactions: int
    ingested_at: int
    """Unix ms."""


@dataclass(frozen=True, slots=True)
class _Hours:
    open: int
    close: int


_HOURS: dict[dt.date, _Hours] = {}


def hours(day: dt.date) -> _Hours:
    """The regular session of ``day`` in Unix ms (13:00 New York close on early closes)."""
    hit = _HOURS.get(day)
    if hit is None:
        hit = _HOURS[day] = _Hours(
            _ms(calendar.session_open(day)), _ms(calendar.session_close(day))
        )
    return hit


@dataclass
class DayFold:
    """Days being built, per session date and symbol (snapshotted inside the minute fold)."""

    settle_ms: int
    horizon_ms: int
    days: dict[dt.date, dict[str, list[Any]]] = field(default_factory=dict)
    recent: dict[tuple[str, int], tuple[float, int, int]] = field(default_factory=dict)
    """(symbol, minute start) -> (volume, notional units, trades) of its last revision."""
    emitted: dict[dt.date, int] = field(default_factory=dict)
    """Days already emitted, and how many times (a late revision re-emits)."""

    def add(self, symbol: str, day: dt.date, start: int, bar: Any) -> None:
        """Fold one final minute bar (a MinuteBar) of session ``day`` into its symbol's day."""
        h = hours(day)
        if not h.open <= start < h.close:
            return  # extended hours are not part of the daily bar
        vol = float(bar.volume)
        units = round(bar.vwap * vol * PRICE_UNITS) if bar.vwap is not None else 0
        key = (symbol, start)
        old_v, old_u, old_n = self.recent.get(key, (0.0, 0, 0))
        self.recent[key] = (vol, units, bar.trades)
        accs = self.days.setdefault(day, {})
        acc = accs.get(symbol)
        if acc is None:
            accs[symbol] = [start, bar.open, start, bar.close, bar.high, bar.low, vol, units,
                            bar.trades]  # fmt: skip
        else:
            if start <= acc[_FIRST]:
                acc[_FIRST], acc[_OPEN] = start, bar.open
            if start >= acc[_LAST]:
                acc[_LAST], acc[_CLOSE] = start, bar.close
            acc[_HIGH] = max(acc[_HIGH], bar.high)
            acc[_LOW] = min(acc[_LOW], bar.low)
            acc[_VOL] += vol - old_v
            acc[_NOTIONAL] += units - old_u
            acc[_N] += bar.trades - old_n
        if day in self.emitted:
            self.emitted[day] = -abs(self.emitted[day])  # due again: a revision came in

    def due(self, watermark: int) -> list[DayBar]:
        """Days whose close plus the settle time the watermark has passed (or revised since)."""
        out: list[DayBar] = []
        for day in sorted(self.days):
            settled = hours(day).close + self.settle_ms
            if watermark < settled:
                continue
            times = self.emitted.get(day, 0)
            if times > 0:
                continue
            times = -times + 1 if times < 0 else 1
            self.emitted[day] = times
            out += self._bars(day, settled + times - 1)
        self._forget(watermark)
        return out

    def _bars(self, day: dt.date, ingested_ms: int) -> list[DayBar]:
        out = []
        for symbol, acc in sorted(self.days[day].items()):
            vol = acc[_VOL]
            out.append(
                DayBar(
                    symbol=symbol,
                    date=day,
                    open=acc[_OPEN],
                    high=acc[_HIGH],
                    low=acc[_LOW],
                    close=acc[_CLOSE],
                    volume=vol,
                    vwap=acc[_NOTIONAL] / PRICE_UNITS / vol if vol > 0 else None,
                    transactions=acc[_N],
                    ingested_at=ingested_ms,
                )
            )
        return out

    def _forget(self, watermark: int) -> None:
        edge = watermark - self.horizon_ms
        for key in [k for k in self.recent if k[1] < edge]:
            del self.recent[key]
        for day in [d for d in self.days if self.emitted.get(d, 0) > 0]:
            if hours(day).close + max(self.settle_ms, self.horizon_ms) < edge:
                del self.days[day]  # no revision can reach it any more
                del self.emitted[day]


def daily_table(bars: list[DayBar]) -> pa.Table:
    """BRONZE_DAILY rows (``source=live``) of ``bars``."""
    cols: dict[str, list[Any]] = {name: [] for name in BRONZE_DAILY.names}
    for b in bars:
        cols["symbol"].append(b.symbol)
        cols["date"].append(b.date)
        cols["open"].append(b.open)
        cols["high"].append(b.high)
        cols["low"].append(b.low)
        cols["close"].append(b.close)
        cols["volume"].append(b.volume)
        cols["vwap"].append(b.vwap)
        cols["transactions"].append(b.transactions)
        cols["source"].append("live")
        cols["ingested_at"].append(b.ingested_at * 1000)
    arrays = [
        pa.array(cols[f.name], pa.int64()).cast(f.type)
        if f.name == "ingested_at"
        else pa.array(cols[f.name], f.type)
        for f in BRONZE_DAILY
    ]
    return pa.Table.from_arrays(arrays, schema=BRONZE_DAILY)
