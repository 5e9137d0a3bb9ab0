"""Malformed rows injected on chosen dates, so tests can prove that ingestion quarantines them.

Each kind breaks one rule the ingestion validates: a missing field (no ``c``), a negative price,
high below low, a bar dated on a weekend, and (grouped daily only) an invalid ticker. The
defect is recorded per row in :attr:`Bars.defect`, so a test knows exactly what to expect.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Final

import numpy as np

from dataflows.simulator import noise
from dataflows.simulator.bars import Bars, concat

MISSING_FIELD: Final = "missing_field"
NEGATIVE_PRICE: Final = "negative_price"
HIGH_LOW: Final = "high_low"
WEEKEND: Final = "weekend"
BAD_SYMBOL: Final = "bad_symbol"
KINDS: Final = (MISSING_FIELD, NEGATIVE_PRICE, HIGH_LOW, WEEKEND, BAD_SYMBOL)
RANGE_KINDS: Final = (MISSING_FIELD, NEGATIVE_PRICE, HIGH_LOW, WEEKEND)
"""Kinds that apply to per-ticker range aggregates (the ticker is not in their rows)."""

BadRows = Mapping[dt.date, tuple[str, ...]]
_UNIX: Final = dt.date(1970, 1, 1)


def normalise(
    spec: Mapping[dt.date, Iterable[str] | str] | Iterable[dt.date] | None,
) -> dict[dt.date, tuple[str, ...]]:
    """Accept ``{date: kinds}``, ``{date: "all"}`` or a bare collection of dates (all kinds)."""
    if spec is None:
        return {}
    items: Iterable[tuple[dt.date, Iterable[str] | str]]
    items = spec.items() if isinstance(spec, Mapping) else ((d, "all") for d in spec)
    out: dict[dt.date, tuple[str, ...]] = {}
    for day, kinds in items:
        if not isinstance(day, dt.date):
            msg = f"bad-row dates must be datetime.date, not {day!r}"
            raise TypeError(msg)
        chosen = (
            KINDS
            if kinds == "all"
            else tuple(dict.fromkeys([kinds] if isinstance(kinds, str) else kinds))
        )
        unknown = set(chosen) - set(KINDS)
        if unknown:
            msg = f"unknown bad-row kinds {sorted(unknown)}; expected some of {KINDS}"
            raise ValueError(msg)
        if chosen:
            out[day] = tuple(k for k in KINDS if k in chosen)
    return out


def saturday_after(day: dt.date) -> dt.date:
    """The first Saturday after ``day``."""
    return day + dt.timedelta(days=(5 - day.weekday()) % 7 or 7)


def _break(b: Bars, row: int, kind: str) -> None:
    if kind == MISSING_FIELD:
        b.close[row] = np.nan
    elif kind == NEGATIVE_PRICE:
        b.open[row] = -abs(b.open[row])
    elif kind == HIGH_LOW:
        hi, lo = b.high[row], b.low[row]
        b.high[row], b.low[row] = (lo, hi) if hi > lo else (lo * 0.99, lo)
    elif kind == BAD_SYMBOL:
        b.symbol[row] = f"{b.symbol[row]}$"


def grouped(
    bars: Bars, day: dt.date, kinds: Collection[str], seed: int, t_of: Callable[[dt.date], int]
) -> Bars:
    """One row per kind, on distinct symbols chosen by hash, replaced by a malformed copy."""
    if not kinds or not len(bars):
        return bars
    out = bars.take(np.arange(len(bars)))
    defect = np.full(len(out), "", dtype=object)
    order = np.argsort(
        noise.keys(noise.scalar_key(seed, 0xBAD, day.toordinal()), np.arange(len(out)))
    )
    for row, kind in zip(order.tolist(), [k for k in KINDS if k in kinds], strict=False):
        if kind == WEEKEND:
            sat = saturday_after(day)
            out.day[row] = (sat - _UNIX).days
            out.t[row] = t_of(sat)
        else:
            _break(out, row, kind)
        defect[row] = kind
    return out.with_defects(defect)


def ranged(
    bars: Bars, bad: BadRows, first: dt.date, last: dt.date, t_of: Callable[[dt.date], int]
) -> Bars:
    """Per-ticker daily bars: on each bad date the kinds hit that bar and the next ones in turn.

    A weekend kind adds a copy of the date's bar stamped on the nearest Saturday inside
    [first, last] instead of replacing a bar.
    """
    if not bad or not len(bars):
        return bars
    days = bars.day
    out = bars.take(np.arange(len(bars)))
    defect = np.full(len(out), "", dtype=object)
    extra: list[Bars] = []
    for day, kinds in sorted(bad.items()):
        pos = int(np.searchsorted(days, (day - _UNIX).days))
        if pos >= len(days) or days[pos] != (day - _UNIX).days:
            continue
        row = pos
        for kind in (k for k in RANGE_KINDS if k in kinds):
            if kind == WEEKEND:
                sat = saturday_after(day)
                if sat > last:
                    sat = sat - dt.timedelta(days=7)
                if sat < first:
                    continue
                copy = bars.take([pos])
                copy.day[0] = (sat - _UNIX).days
                copy.t[0] = t_of(sat)
                extra.append(copy.with_defects(np.array([WEEKEND], dtype=object)))
            elif row < len(out):
                _break(out, row, kind)
                defect[row] = kind
                row += 1
    merged = concat([out.with_defects(defect), *extra])
    return merged.take(np.argsort(merged.t, kind="stable"))
