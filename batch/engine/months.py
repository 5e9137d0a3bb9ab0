"""Month indices (months since 1900-01) of date32 values: the key of silver's month files."""

from __future__ import annotations

import datetime as dt
import functools
from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from core import arrays

MONTH_BASE: Final = 1900 * 12
_EPOCH: Final = dt.date(1970, 1, 1)


def _exact(days: npt.NDArray[np.int32]) -> npt.NDArray[np.int16]:
    months = days.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)
    return (months + (1970 * 12 - MONTH_BASE)).astype(np.int16)


@functools.lru_cache(maxsize=1)
def by_day() -> tuple[int, npt.NDArray[np.int16]]:
    """(first day, month index of every day 1900-01-01 .. 2199-12-31): a 220 kB table."""
    first = (dt.date(1900, 1, 1) - _EPOCH).days
    last = (dt.date(2199, 12, 31) - _EPOCH).days
    table = _exact(np.arange(first, last + 1, dtype=np.int32))
    table.setflags(write=False)
    return first, table


def in_table(days: npt.NDArray[np.int32]) -> bool:
    """True when every date lies in :func:`by_day`'s range."""
    first, table = by_day()
    return len(days) == 0 or (int(days.min()) >= first and int(days.max()) - first < len(table))


def month_index(days: npt.NDArray[np.int32]) -> npt.NDArray[np.int16]:
    """Months since 1900-01 of date32 values (fits int16, so numpy sorts it by radix).

    Gathered from a table: the datetime64 conversions cost three full-size temporaries.
    """
    if len(days) == 0 or not in_table(days):
        return _exact(days)
    first, table = by_day()
    return np.asarray(table[days.astype(np.int32, copy=False) - np.int32(first)], np.int16)


def bar_months(bars: pa.Table, key: str = "start_date") -> npt.NDArray[np.int16]:
    """The month index of each bar's ``key`` date (the month file it belongs to)."""
    starts = pc.cast(bars[key], pa.int32())
    return month_index(np.asarray(arrays.to_numpy(starts), dtype=np.int32))


def month_of_day(day: int) -> int:
    """Month index of one date32 value."""
    return int(month_index(np.array([day], dtype=np.int32))[0])


def year_month(month: int) -> tuple[int, int]:
    """(year, month) of a month index."""
    total = MONTH_BASE + month
    return total // 12, total % 12 + 1
