"""Per interval and symbol, the summary of the open window holding the symbol's newest minute.

The live rollup publishes, each time a symbol's minutes close, the summaries of its open
windows that hold its newest final minute (:mod:`core.forming`); no other window's summary is
ever read, so only that one is kept, as columns by symbol index. A minute close of thousands of
symbols, each minute the next one of its window, is then a few array operations per interval
instead of a dict lookup and a list update per symbol and interval (30,000 at 5,000 symbols,
every minute). The arithmetic is :func:`core.forming.add`'s, operation for operation, so the
sums are the same bits.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import numpy.typing as npt

from core.forming import NO_START

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
NONE: Final = NO_START
"""Begin of a slot holding no window."""
OPEN, HIGH, LOW, VOLUME, DEN, NUM = range(6)
TRADES, MINUTES, LAST = range(3)
_MIN_CAPACITY: Final = 64


class OpenSums:
    """Slots [interval, symbol]: the window's begin and end ms, and its summary."""

    def __init__(self, intervals: int) -> None:
        self.begin: I64 = np.full((intervals, _MIN_CAPACITY), NONE, np.int64)
        self.end: I64 = np.zeros((intervals, _MIN_CAPACITY), np.int64)
        self.f: F64 = np.zeros((intervals, 6, _MIN_CAPACITY), np.float64)
        """open, high, low, volume, vwap weight, vwap numerator."""
        self.i: I64 = np.zeros((intervals, 3, _MIN_CAPACITY), np.int64)
        """trades, minutes, last minute's start."""

    def reserve(self, symbols: int) -> None:
        """Room for symbol indexes below ``symbols``."""
        cap = self.begin.shape[1]
        if symbols <= cap:
            return
        new = max(symbols, 2 * cap)
        begin = np.full((self.begin.shape[0], new), NONE, np.int64)
        begin[:, :cap] = self.begin
        self.begin = begin
        self.end = _grow(self.end, new)
        self.f = _grow(self.f, new)
        self.i = _grow(self.i, new)

    def get(self, j: int, k: int, begin: int) -> list[Any] | None:
        """The summary of symbol ``k``'s window at ``begin`` (interval ``j``), if held."""
        if self.begin[j, k] != begin:
            return None
        return [*self.f[j, :, k].tolist(), *self.i[j, :, k].tolist()]

    def put(self, j: int, k: int, begin: int, end: int, s: list[Any]) -> None:
        """Hold summary ``s`` (:mod:`core.forming`'s list) for the window at ``begin``."""
        self.begin[j, k], self.end[j, k] = begin, end
        self.f[j, :, k] = s[:6]
        self.i[j, :, k] = s[6:]

    def drop(self, j: int, k: int, begin: int) -> None:
        """Forget the window at ``begin`` (it closed)."""
        if self.begin[j, k] == begin:
            self.begin[j, k] = NONE

    def add(self, j: int, k: I64, start: I64, v: F64, trades: I64) -> None:
        """Each symbol of ``k`` (no two alike) its next minute: :func:`core.forming.add`.

        ``v``: the minutes' open, high, low, close, volume, vwap rows (NaN vwap: none).
        """
        f, n = self.f[j], self.i[j]
        high, low = f[HIGH, k], f[LOW, k]
        mh, ml, mv, mw = v[1], v[2], v[4], v[5]
        f[HIGH, k] = np.where(mh > high, mh, high)  # max(s, mh): s unless mh is greater
        f[LOW, k] = np.where(ml < low, ml, low)
        f[VOLUME, k] = f[VOLUME, k] + mv
        has = ~np.isnan(mw)
        f[DEN, k] = np.where(has, f[DEN, k] + mv, f[DEN, k])
        f[NUM, k] = np.where(has, f[NUM, k] + mw * mv, f[NUM, k])
        n[TRADES, k] += trades
        n[MINUTES, k] += 1
        n[LAST, k] = start

    def first(self, j: int, k: I64, begin: I64, end: I64, start: I64, v: F64, trades: I64) -> None:
        """Each symbol of ``k`` a new window holding one minute: :func:`core.forming.first`."""
        self.begin[j, k], self.end[j, k] = begin, end
        f, n = self.f[j], self.i[j]
        mh, ml, mv, mw = v[1], v[2], v[4], v[5]
        has = ~np.isnan(mw)
        f[OPEN, k] = v[0]
        f[HIGH, k] = np.where(mh > -np.inf, mh, -np.inf)
        f[LOW, k] = np.where(ml < np.inf, ml, np.inf)
        f[VOLUME, k] = 0.0 + mv
        f[DEN, k] = np.where(has, 0.0 + mv, 0.0)
        f[NUM, k] = np.where(has, 0.0 + mw * mv, 0.0)
        n[TRADES, k] = trades
        n[MINUTES, k] = 1
        n[LAST, k] = start

    def windows(self, k: I64, names: tuple[str, ...]) -> list[dict[str, list[Any]]]:
        """Per symbol of ``k``, its held windows by interval: ``[begin, end, *summary]``."""
        out: list[dict[str, list[Any]]] = [{} for _ in range(len(k))]
        for j, name in enumerate(names):
            held = np.flatnonzero(self.begin[j, k] != NONE)
            if not len(held):
                continue
            at = k[held]
            cols = (self.begin[j, at].tolist(), self.end[j, at].tolist(),
                    *self.f[j][:, at].tolist(), *self.i[j][:, at].tolist())  # fmt: skip
            for pos, row in zip(held.tolist(), zip(*cols, strict=True), strict=True):
                out[pos][name] = list(row)
        return out


def _grow(a: npt.NDArray[Any], cap: int) -> npt.NDArray[Any]:
    out = np.zeros((*a.shape[:-1], cap), a.dtype)
    out[..., : a.shape[-1]] = a
    return out
