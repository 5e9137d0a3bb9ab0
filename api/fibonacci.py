"""Fibonacci bars of one symbol from silver month files, pruned by month and by symbol.

Month files are named for the month of ``start_date``, so a start/end range skips whole files
by name before any is opened; inside the files the symbol (and dates) are pushed down to
Parquet statistics by a pyarrow dataset filter.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Final

import pyarrow.dataset as ds

from core import layout
from core.lake import Lake
from core.schemas import SILVER

COLUMNS: Final = (
    "start_date", "end_date", "open", "high", "low", "close", "volume", "days", "complete",
)  # fmt: skip
_MONTH_RE: Final = re.compile(r"/year=(\d{4})/month=(\d{2})/[^/]+\.parquet$")


def month_keys(lake: Lake, interval: int, start: dt.date | None, end: dt.date | None) -> list[str]:
    """Month files of ``interval`` whose month can hold a bar starting in [start, end]."""
    lo = (start.year, start.month) if start else (0, 0)
    hi = (end.year, end.month) if end else (9999, 12)
    keys = []
    for e in lake.list(layout.silver_dir(interval), suffix=".parquet"):
        m = _MONTH_RE.search(e.key)
        if m and lo <= (int(m[1]), int(m[2])) <= hi:
            keys.append(e.key)
    return keys


def read_bars(
    lake: Lake,
    symbol: str,
    interval: int,
    start: dt.date | None,
    end: dt.date | None,
    limit: int | None,
) -> list[dict[str, Any]]:
    """Silver rows of ``symbol`` with start_date in [start, end] (the last ``limit``), ascending."""
    keys = month_keys(lake, interval, start, end)
    if not keys:
        return []
    where = ds.field("symbol") == symbol
    if start is not None:
        where &= ds.field("start_date") >= start
    if end is not None:
        where &= ds.field("start_date") <= end
    dataset = ds.dataset(
        [lake.path(k) for k in keys], schema=SILVER, format="parquet", filesystem=lake.fs
    )
    table = dataset.to_table(columns=list(COLUMNS), filter=where).sort_by("start_date")
    if limit is not None and table.num_rows > limit:
        table = table.slice(table.num_rows - limit)
    return list(table.to_pylist())
