"""The live rollup's final minute bars as columns: appended as they close, read per window.

At a 5m..4h close the rollup reads every minute of thousands of windows (at 13:30 New York the
4h, 2h, 1h, 30m, 15m and 5m windows of every symbol: 470 minutes each) and reduces them by the
batch rule; held as one tuple per minute in a dict per symbol, gathering them and building the
table cost seconds, and the recovery snapshot pickled every tuple every few seconds. Columns
make both a few array operations. A revision is appended like any minute: the last row of a
(symbol, start) is the one that counts.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import numpy.typing as npt

from core.forming import NO_START, Minute

I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
F64 = npt.NDArray[np.float64]
OPEN, HIGH, LOW, CLOSE, VOLUME, VWAP = range(6)
"""Rows of :attr:`MinuteLog.values` (VWAP NaN: the minute has none)."""
_MIN_CAPACITY: Final = 1024


class MinuteLog:
    """Minutes as columns, in the order they were appended."""

    def __init__(self) -> None:
        self.n = 0
        self.sym: I32 = np.empty(_MIN_CAPACITY, np.int32)
        self.start: I64 = np.empty(_MIN_CAPACITY, np.int64)
        self.values: F64 = np.empty((6, _MIN_CAPACITY), np.float64)
        self.trades: I64 = np.empty(_MIN_CAPACITY, np.int64)

    def append(self, sym: list[int], start: list[int], minutes: list[Minute]) -> None:
        """Append minutes (``sym[i]``'s minute at ``start[i]`` is ``minutes[i]``)."""
        k = len(sym)
        if not k:
            return
        self._reserve(self.n + k)
        end = self.n + k
        self.sym[self.n : end] = sym
        self.start[self.n : end] = start
        o, h, lo, c, v, w, t = zip(*minutes, strict=True)
        self.values[:, self.n : end] = (o, h, lo, c, v, [np.nan if x is None else x for x in w])
        self.trades[self.n : end] = t
        self.n = end

    def rows(self, lo: I64, hi: I64, code: I64) -> I64:
        """Rows of the minutes with ``lo[sym] <= start < hi[sym]``, sorted by code and start.

        The last row of each (symbol, start): a revision appended after the minute it revises.
        """
        n = self.n
        sym, start = self.sym[:n], self.start[:n]
        hit = np.flatnonzero((start >= lo[sym]) & (start < hi[sym]))
        if not len(hit):
            return hit
        order = hit[np.lexsort((hit, start[hit], code[sym[hit]]))]
        s, st = sym[order], start[order]
        last = np.ones(len(order), bool)
        last[:-1] = (s[1:] != s[:-1]) | (st[1:] != st[:-1])
        return order[last]

    def minutes(self, rows: I64) -> list[tuple[int, Minute]]:
        """(start, minute) of ``rows``."""
        v = self.values[:, rows].tolist()
        w = [None if x != x else x for x in v[VWAP]]  # NaN: none
        return list(zip(self.start[rows].tolist(), zip(*v[:VWAP], w, self.trades[rows].tolist(),
                                                        strict=True), strict=True))  # fmt: skip

    def drop_before(self, cutoff: int) -> None:
        """Forget the minutes held now that start before ``cutoff``.

        Minutes appended later are kept, however old, until the next call: a late minute of a
        window the caller forgot opens it again with itself only. Forgotten rows are marked
        (no read returns them) and copied out once they are a quarter of the log: a copy of
        the rest at every call would cost more than the rows left behind.
        """
        n = self.n
        start = self.start[:n]
        old = start < cutoff
        if not old.any():
            return
        start[old] = NO_START
        if int(np.count_nonzero(old)) * 4 < n:
            return
        keep = np.flatnonzero(~old)
        self.sym, self.start = self.sym[keep], self.start[keep]
        self.values, self.trades = self.values[:, keep], self.trades[keep]
        self.n = len(keep)

    def _reserve(self, need: int) -> None:
        cap = len(self.sym)
        if need <= cap:
            return
        cap = max(need, cap * 2)
        n = self.n
        self.sym = _grow(self.sym[:n], cap)
        self.start = _grow(self.start[:n], cap)
        self.trades = _grow(self.trades[:n], cap)
        values = np.empty((6, cap), np.float64)
        values[:, :n] = self.values[:, :n]
        self.values = values

    def __getstate__(self) -> dict[str, Any]:
        """The rows only: a snapshot does not carry the spare capacity."""
        n = self.n
        return {"n": n, "sym": self.sym[:n], "start": self.start[:n],
                "values": self.values[:, :n], "trades": self.trades[:n]}  # fmt: skip

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


def _grow(a: npt.NDArray[Any], cap: int) -> npt.NDArray[Any]:
    out = np.empty(cap, a.dtype)
    out[: len(a)] = a
    return out
