"""Compiled loops (numba) for the Fibonacci bars: one pass over the daily rows per interval.

The numpy formulation (:func:`batch.engine.fib.bars_numpy`) makes a dozen passes over the market's
22M rows per interval, each allocating a full-size temporary, then gathers every bar again
to split them into month files. Here one loop counts the bars per start month and a second
writes each bar straight into its month-file position, so silver needs no reordering: a month
file is a slice. Aggregation is the reference's own loop (volume summed left to right).

Compiled on first use and cached as :mod:`core.jit` arranges.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import numpy.typing as npt

from core.jit import jit

MONTHS: Final = 300 * 12
"""Month indices 1900-01 .. 2199-12 (:func:`batch.engine.months.by_day`)."""


def _group(
    i: int,
    seg_start: int,
    first_row: int,
    day: int,
    n: int,
    group_table: npt.NDArray[np.int32],
    group_first: int,
    calendar: bool,
) -> int:
    if calendar:
        return int(group_table[day - group_first])
    return (first_row + i - seg_start) // n


def _count(
    offsets: npt.NDArray[np.int64],
    first_rows: npt.NDArray[np.int64],
    date: npt.NDArray[np.int32],
    month_table: npt.NDArray[np.int16],
    month_first: int,
    group_table: npt.NDArray[np.int32],
    group_first: int,
    n: int,
    calendar: bool,
) -> npt.NDArray[np.int64]:
    counts = np.zeros(MONTHS + 1, dtype=np.int64)
    for seg in range(len(offsets) - 1):
        a, b = offsets[seg], offsets[seg + 1]
        prev = -1
        for i in range(a, b):
            g = _group_jit(i, a, first_rows[seg], date[i], n, group_table, group_first, calendar)
            if i == a or g != prev:
                counts[month_table[date[i] - month_first] + 1] += 1
            prev = g
    return counts


def _fill(
    offsets: npt.NDArray[np.int64],
    first_rows: npt.NDArray[np.int64],
    date: npt.NDArray[np.int32],
    open_: npt.NDArray[np.float64],
    high: npt.NDArray[np.float64],
    low: npt.NDArray[np.float64],
    close: npt.NDArray[np.float64],
    volume: npt.NDArray[np.float64],
    month_table: npt.NDArray[np.int16],
    month_first: int,
    group_table: npt.NDArray[np.int32],
    group_first: int,
    n: int,
    calendar: bool,
    bounds: npt.NDArray[np.int64],
) -> tuple[npt.NDArray[Any], ...]:
    total = bounds[-1]
    seg_out = np.empty(total, dtype=np.int32)
    start = np.empty(total, dtype=np.int32)
    end = np.empty(total, dtype=np.int32)
    o = np.empty(total, dtype=np.float64)
    h = np.empty(total, dtype=np.float64)
    lo = np.empty(total, dtype=np.float64)
    c = np.empty(total, dtype=np.float64)
    v = np.empty(total, dtype=np.float64)
    days = np.empty(total, dtype=np.int32)
    cursor = bounds[:-1].copy()
    for seg in range(len(offsets) - 1):
        a, b = offsets[seg], offsets[seg + 1]
        if a == b:
            continue
        # the open bar lives in locals (registers); it is stored once, when it closes
        prev = _group_jit(a, a, first_rows[seg], date[a], n, group_table, group_first, calendar)
        first, bar_h, bar_l, bar_v, count = a, high[a], low[a], volume[a], 1
        for i in range(a + 1, b + 1):
            g = prev
            if i < b:
                g = _group_jit(
                    i, a, first_rows[seg], date[i], n, group_table, group_first, calendar
                )
            if i == b or g != prev:
                m = month_table[date[first] - month_first]
                pos = cursor[m]
                cursor[m] += 1
                seg_out[pos] = seg
                start[pos] = date[first]
                end[pos] = date[i - 1]
                o[pos] = open_[first]
                h[pos] = bar_h
                lo[pos] = bar_l
                c[pos] = close[i - 1]
                v[pos] = bar_v
                days[pos] = count
                if i < b:
                    first, bar_h, bar_l, bar_v, count = i, high[i], low[i], volume[i], 1
                    prev = g
            else:
                # as np.maximum / np.minimum: a NaN wins and stays
                if high[i] > bar_h or high[i] != high[i]:
                    bar_h = high[i]
                if low[i] < bar_l or low[i] != low[i]:
                    bar_l = low[i]
                bar_v += volume[i]
                count += 1
    return seg_out, start, end, o, h, lo, c, v, days


# typed as Any: the dispatchers take the array types at run time
_group_jit: Any = jit(_group, inline="always")
_count_jit: Any = jit(_count)
_fill_jit: Any = jit(_fill)


def bars_by_month(
    offsets: npt.NDArray[np.int64],
    first_rows: npt.NDArray[np.int64],
    date: npt.NDArray[np.int32],
    prices: tuple[npt.NDArray[np.float64], ...],
    months: tuple[int, npt.NDArray[np.int16]],
    groups: tuple[int, npt.NDArray[np.int32]] | None,
    interval: int,
) -> tuple[npt.NDArray[np.int64], tuple[npt.NDArray[Any], ...]]:
    """(month bounds, bar columns) with bars in month-file order.

    Bars of month index ``m`` sit at ``bounds[m]:bounds[m + 1]``, sorted by (segment, start
    date). Columns: segment, start, end, open, high, low, close, volume, days. ``prices`` is
    open, high, low, close, volume. ``months`` is (first day, table): every date's month index.
    ``groups`` is the calendar anchor's (first day, table) of every date's group, or None for
    the symbol anchor (g = position in the symbol's history, from ``first_rows``, // N).
    """
    month_first, month_table = months
    calendar = groups is not None
    group_first, group_table = groups if groups is not None else (0, np.zeros(1, np.int32))
    shape = (_ro(month_table, np.int16), int(month_first), _ro(group_table, np.int32),
             int(group_first), int(interval), calendar)  # fmt: skip
    offsets, first_rows = _ro(offsets, np.int64), _ro(first_rows, np.int64)
    date = _ro(date, np.int32)
    values = tuple(_ro(p, np.float64) for p in prices)
    counts: npt.NDArray[np.int64] = _count_jit(offsets, first_rows, date, *shape)
    bounds = np.cumsum(counts)
    columns: tuple[npt.NDArray[Any], ...] = _fill_jit(
        offsets, first_rows, date, *values, *shape, bounds
    )
    return bounds, columns


def _ro(array: npt.NDArray[Any], dtype: type[np.generic]) -> npt.NDArray[Any]:
    """A read-only, contiguous view of ``dtype``.

    Numba compiles once per array type, and arrays arrive both writable (numpy) and read-only
    (views of Arrow buffers).
    """
    out = np.ascontiguousarray(array, dtype=dtype).view()
    out.setflags(write=False)
    return out


def warm() -> None:
    """Compile (or load from the cache) both loops now, e.g. before forking workers."""
    one = np.zeros(1, np.int64)
    bars_by_month(
        np.array([0, 1], np.int64), one, np.zeros(1, np.int32), (np.ones(1),) * 5,
        (0, np.zeros(1, np.int16)), (0, np.zeros(1, np.int32)), 3,
    )  # fmt: skip
