"""Fibonacci bars of one symbol's daily rows, computed on read: pure numpy, no I/O.

Silver holds split-adjusted bars; a reader that wants them raw or total-return adjusted builds
them from the daily rows with the same semantics (the contract's "Fibonacci bar semantics"):
calendar anchor, k = XNYS sessions since 1962-01-02 before the date; symbol anchor, k = the
row's position in the symbol's whole history; g = k // N; open of the first row, close of the
last, max high, min low, volume summed in date order, complete as silver defines it.
"""

from __future__ import annotations

from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

from core import calendar

Anchor = Literal["calendar", "symbol"]
COLUMNS: Final = (
    "start_date", "end_date", "open", "high", "low", "close", "volume", "days", "complete",
)  # fmt: skip


def groups(days: npt.NDArray[np.int32], interval: int, anchor: Anchor) -> npt.NDArray[np.int64]:
    """The group g = k // N of each row of one symbol's whole history (date32 days, ascending)."""
    if anchor == "calendar":
        k = calendar.session_indices(days)
    else:
        k = np.arange(len(days), dtype=np.int64)
    return np.asarray(k // int(interval), dtype=np.int64)


def bars(
    days: npt.NDArray[np.int32],
    prices: dict[str, npt.NDArray[np.float64]],
    interval: int,
    anchor: Anchor,
    last_day: int | None,
) -> dict[str, npt.NDArray[Any]]:
    """Bars of one symbol's whole history (``prices``: open, high, low, close, volume).

    ``last_day``: the lake's last date (date32), for the calendar anchor's ``complete``.
    """
    n = int(interval)
    if len(days) == 0:
        return {c: np.zeros(0) for c in COLUMNS}
    g = groups(days, n, anchor)
    starts = np.flatnonzero(np.concatenate([[True], g[1:] != g[:-1]]))
    ends = np.concatenate([starts[1:], [len(days)]]) - 1
    count = (ends - starts + 1).astype(np.int32)
    volume = np.array(
        [
            float(sum(prices["volume"][a : b + 1].tolist()))
            for a, b in zip(starts, ends, strict=True)
        ]
    )
    if anchor == "calendar":
        through = (
            0
            if last_day is None
            else int(np.searchsorted(calendar.session_days(), last_day, "right"))
        )
        complete = (g[starts] + 1) * n - 1 < through
    else:
        complete = count == n
    return {
        "start_date": days[starts],
        "end_date": days[ends],
        "open": prices["open"][starts],
        "high": np.maximum.reduceat(prices["high"], starts),
        "low": np.minimum.reduceat(prices["low"], starts),
        "close": prices["close"][ends],
        "volume": volume,
        "days": count,
        "complete": np.asarray(complete, dtype=bool),
    }
