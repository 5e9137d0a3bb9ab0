"""The contract's row rules, applied again where hand-written fragments enter consolidation.

Ingestion validates what it writes, but bronze is an open folder: a user's own files, an old
export or a bug upstream can put a row dated on a closure, a NaN price or an unknown source
there. Such a row would reach silver as a bar with ``days > N``. This screen keeps them out and
puts them in quarantine with their reasons. It is numpy over the columns, cheap enough to run
on every fragment (about 50 us for a one-row fragment).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from batch import arrays
from core import calendar, layout
from core.lake import Lake
from core.validation import quarantine_table

SOURCES: Final = ("rest", "live", "export", "flatfile")
QUARANTINE_SOURCE: Final = "consolidate"


def _price_bad(x: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
    return ~(np.isfinite(x) & (x > 0))


def problems(table: pa.Table) -> list[tuple[str, npt.NDArray[np.bool_]]]:
    """(reason, failing mask) per rule, for a table with the bronze columns."""
    col = {n: np.asarray(arrays.to_numpy(table[n]), dtype=np.float64)
           for n in ("open", "high", "low", "close", "volume")}  # fmt: skip
    o, h, lo, c, v = col["open"], col["high"], col["low"], col["close"], col["volume"]
    days = arrays.date_days(table)
    sessions = calendar.session_days()
    idx = np.clip(np.searchsorted(sessions, days), 0, len(sessions) - 1)
    with np.errstate(invalid="ignore"):
        rules = [
            ("date is not an XNYS session", sessions[idx] != days),
            *(
                (f"{n} is not a positive finite price", _price_bad(col[n]))
                for n in ("open", "high", "low", "close")
            ),
            ("high < low", h < lo),
            ("open outside [low, high]", (o < lo) | (o > h)),
            ("close outside [low, high]", (c < lo) | (c > h)),
            ("negative or non-finite volume", ~(np.isfinite(v) & (v >= 0))),
            ("unknown source", ~np.isin(arrays.to_numpy(table["source"]), SOURCES)),
        ]
    return rules


def split(table: pa.Table) -> tuple[pa.Table, list[str], pa.Table]:
    """(accepted rows, reasons of the refused ones, refused rows); fast when all pass."""
    rules = problems(table)
    bad = np.zeros(table.num_rows, dtype=bool)
    for _, mask in rules:
        bad |= mask
    if not bad.any():
        return table, [], table.slice(0, 0)
    where = np.flatnonzero(bad)
    reasons = ["; ".join(r for r, m in rules if m[i]) for i in where]
    return table.filter(pa.array(~bad)), reasons, table.take(pa.array(where))


def quarantine(
    lake: Lake, symbol: str, fragment_key: str, rows: pa.Table, reasons: list[str], now: dt.datetime
) -> str:
    """Write refused rows under their earliest date; the same fragment always lands on one key."""
    first = min(rows["date"].to_pylist())
    part = hashlib.sha256(fragment_key.encode()).hexdigest()[:16]
    key = layout.quarantine_part(QUARANTINE_SOURCE, first, f"{symbol}-{part}")
    if not lake.exists(key):
        lake.write_table(key, quarantine_table(rows, reasons, QUARANTINE_SOURCE, now))
    return key
