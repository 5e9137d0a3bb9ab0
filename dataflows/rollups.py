"""Live 5m..4h bars: the live flow's minute bars rolled up as they close, by the batch rule.

One stateful step over the fold's results (:class:`dataflows.minute_fold.FoldOut`). It keeps
the final minute bars of every window still open (and of windows closed less than the revision
horizon ago), and emits :class:`RollupBar` events like minute bars: ``final`` true once the
watermark of the symbol's source partition passes the window's end (``revision`` 0), and again
with ``revision`` n+1 when a late trade revises one of its minutes. Every final bar is computed
by :func:`core.intraday.rollup`, the function batch silver uses, over the same minute values,
so a final live bar equals the batch bar of the same window bit for bit.

Forming bars are not emitted: with the final minutes of a symbol the step emits
:class:`WindowSums`, the summary of each open window's final minutes, and readers combine it
with the forming minute bar they already receive (:mod:`core.forming`, the one arithmetic).
Publishing six forming bars per symbol every second cost the flow and Redis more than the
minute bars themselves at thousands of symbols.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import bytewax.operators as op
import numpy as np
import pyarrow as pa
from bytewax.dataflow import Stream
from bytewax.operators import StatefulLogic

from core import forming, intraday
from core.forming import LAST, Minute, window_of
from core.isotime import ms_iso
from core.schemas import BRONZE_MINUTE
from dataflows.minute_fold import MINUTE_MS, Event, FoldOut, MinuteBar, session_date

KEY: Final = "rollups"
_END: Final = 2**62
WindowKey = tuple[str, str, int]
"""(interval, symbol, window start ms)."""


@dataclass(slots=True, unsafe_hash=True)
class RollupBar(Event):
    """A live intraday bar event."""

    interval: str
    symbol: str
    start: int
    end: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    vwap: float | None
    trades: int
    minutes: int
    complete: bool
    final: bool
    revision: int

    def to_json(self) -> dict[str, Any]:
        """The document Redis stores and publishes (``interval`` tells it from a minute bar)."""
        return {
            "interval": self.interval,
            "symbol": self.symbol,
            "start": ms_iso(self.start),
            "end": ms_iso(self.end),
            "open": self.open,
            "high": self.high,
            "low": self.low,
            "close": self.close,
            "volume": self.volume,
            "vwap": self.vwap,
            "trades": self.trades,
            "minutes": self.minutes,
            "complete": self.complete,
            "final": self.final,
            "revision": self.revision,
        }


@dataclass(slots=True)
class WindowSums(Event):
    """A symbol's open windows, each the summary of its final minutes (:mod:`core.forming`).

    ``windows``: per interval, ``[window start ms, end ms, *summary]``
    (:data:`core.forming.WINDOW`). Stored and published so readers can form 5m..4h bars from
    the forming minute bar.
    """

    symbol: str
    windows: dict[str, list[Any]]

    def to_json(self) -> dict[str, Any]:
        """The document Redis stores and publishes (``windows`` tells it from a bar)."""
        return forming.sums_doc(self.symbol, self.windows)


Rolled = RollupBar | WindowSums
"""What the rollup step emits: final bars (and revisions), and window summaries."""


_AT: dict[tuple[int, tuple[str, ...]], tuple[tuple[str, int, int], ...]] = {}


def _windows_at(start: int, intervals: tuple[str, ...]) -> tuple[tuple[str, int, int], ...]:
    """(interval, window start, end) of each interval's window holding the minute at ``start``."""
    key = (start, intervals)
    hit = _AT.get(key)
    if hit is None:
        if len(_AT) > 100_000:
            _AT.clear()
        hit = _AT[key] = tuple(
            (name, *w) for name in intervals if (w := window_of(start, name)) is not None
        )
    return hit


def _values(b: MinuteBar) -> Minute:
    return (b.open, b.high, b.low, b.close, b.volume, b.vwap, b.trades)


@dataclass
class RollupState:
    """Minutes of open (and recently closed) windows, and the windows themselves."""

    intervals: tuple[str, ...]
    horizon_ms: int
    minutes: dict[str, dict[int, Minute]] = field(default_factory=dict)
    windows: dict[WindowKey, list[int]] = field(default_factory=dict)
    """[end ms, revision emitted (-1: none), closed (0/1)]."""
    ends: dict[str, dict[int, set[WindowKey]]] = field(default_factory=dict)
    """Per source partition, open windows by end."""
    part_of: dict[str, str] = field(default_factory=dict)
    marks: dict[str, int] = field(default_factory=dict)
    sums: dict[WindowKey, list[Any]] = field(default_factory=dict)
    """Per open window with final minutes, their summary."""
    forgotten_before: int = -_END
    """Windows ending before this minute are dropped (the last edge :meth:`_forget` used)."""
    newest: dict[str, int] = field(default_factory=dict)
    """Per symbol, the start of its newest final minute."""

    def step(self, out: FoldOut) -> list[Rolled]:
        """Fold one result of the minute fold; the final bars and window summaries it causes.

        Final bars and revisions of windows the watermark closed or a late trade revised; and
        for each symbol with final minutes in ``out``, its open windows' summaries.
        """
        eof = not out.part
        source = out.part
        finals: set[WindowKey] = set()
        revised: set[WindowKey] = set()
        changed: set[str] = set()
        newest, windows, sums, intervals = self.newest, self.windows, self.sums, self.intervals
        part_of, minutes, add = self.part_of, self.minutes, forming.add
        for b in out.final:
            symbol, start = b.symbol, b.start
            if not eof:
                part_of[symbol] = source
            held = minutes.setdefault(symbol, {})
            fresh = start not in held
            held[start] = v = _values(b)
            if start > newest.get(symbol, -_END):
                newest[symbol] = start
            for name, begin, end in _windows_at(start, intervals):
                key = (name, symbol, begin)
                w = windows.get(key)
                if w is None:  # the window's first final minute
                    self._open(key, end)
                    sums[key] = forming.first(start, v)
                    changed.add(symbol)
                    continue
                if w[2]:
                    revised.add(key)
                    continue
                changed.add(symbol)
                s = sums.get(key)
                if s is not None and fresh and start > s[LAST]:
                    add(s, start, v)  # the next minute in order: no need to start over
                else:
                    sums[key] = forming.summary(
                        (st, m) for st, m in sorted(held.items()) if begin <= st < end
                    )
        if eof:
            for ends in self.ends.values():
                for keys in ends.values():
                    finals |= keys
            self.ends.clear()
        else:
            self.marks[source] = max(self.marks.get(source, out.watermark), out.watermark)
            ends = self.ends.get(source, {})
            for end in [e for e in ends if e <= self.marks[source]]:
                finals |= ends.pop(end)
        for key in finals:
            self.windows[key][2] = 1
            self.sums.pop(key, None)
        rolled: list[Rolled] = list(self._emit(finals | revised))
        rolled += self._summaries(changed)
        self._forget()
        return rolled

    def _summaries(self, symbols: set[str]) -> list[WindowSums]:
        """Each symbol's open windows with final minutes (those of its newest), summarised."""
        out = []
        for symbol in sorted(symbols):
            windows = {}
            for name, begin, end in _windows_at(self.newest[symbol], self.intervals):
                s = self.sums.get((name, symbol, begin))
                if s is not None:
                    windows[name] = [begin, end, *s]
            out.append(WindowSums(symbol, windows))
        return out

    def _open(self, key: WindowKey, end: int) -> None:
        """Start following a window: by its end, under its symbol's source partition."""
        self.windows[key] = [end, -1, 0]
        part = self.part_of.get(key[1], "")
        self.ends.setdefault(part, {}).setdefault(end, set()).add(key)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("newest", {})  # a snapshot of an older version lacks it

    def _emit(self, keys: set[WindowKey]) -> list[RollupBar]:
        """Final bars (and revisions) by the batch rule, :func:`core.intraday.rollup`."""
        by_interval: dict[str, list[WindowKey]] = defaultdict(list)
        for key in keys:
            by_interval[key[0]].append(key)
        out: list[RollupBar] = []
        for name, group in sorted(by_interval.items()):
            rows: list[tuple[str, int, Minute]] = []
            for key in group:
                _, symbol, begin = key
                end = self.windows[key][0]
                held = self.minutes.get(symbol, {})
                rows += [(symbol, s, v) for s, v in held.items() if begin <= s < end]
            for r in _rows(intraday.rollup(minute_table(rows), name)):
                state = self.windows[(name, r["symbol"], r["start"])]
                state[1] += 1
                out.append(RollupBar(interval=name, complete=True, final=True,
                                     revision=state[1], **r))  # fmt: skip
        return out

    def _forget(self) -> None:
        """Drop what the horizon passed, once per minute of watermark.

        Not per batch: every window and every symbol's minutes are walked.
        """
        if not self.marks:
            return
        edge = min(self.marks.values()) - self.horizon_ms
        edge -= edge % MINUTE_MS
        if edge <= self.forgotten_before:
            return
        self.forgotten_before = edge
        old = [k for k, w in self.windows.items() if w[2] and w[0] < edge]
        for k in old:
            del self.windows[k]
            self.sums.pop(k, None)
        cutoff = edge - max(intraday.INTERVALS[i] for i in self.intervals) * MINUTE_MS
        for held in self.minutes.values():
            for s in [s for s in held if s < cutoff]:
                del held[s]


def minute_table(rows: Sequence[tuple[str, int, Minute]]) -> pa.Table:
    """Minute values as the bronze columns :func:`core.intraday.rollup` reads."""
    starts = np.array([r[1] for r in rows], np.int64)
    days = [session_date(int(s)) for s in starts]
    cols = list(zip(*(r[2] for r in rows), strict=True)) if rows else [()] * 7
    f = BRONZE_MINUTE.field
    return pa.table(
        {
            "symbol": pa.array([r[0] for r in rows], pa.string()),
            "date": pa.array(days, pa.date32()),
            "start": pa.array(starts * 1000, pa.int64()).cast(f("start").type),
            "open": pa.array(cols[0], pa.float64()),
            "high": pa.array(cols[1], pa.float64()),
            "low": pa.array(cols[2], pa.float64()),
            "close": pa.array(cols[3], pa.float64()),
            "volume": pa.array(cols[4], pa.float64()),
            "vwap": pa.array(cols[5], pa.float64()),
            "trades": pa.array(cols[6], pa.int64()),
        }
    )


def _rows(table: pa.Table) -> Iterable[dict[str, Any]]:
    """Rollup rows with ms stamps, without the ``complete`` flag (the event sets it)."""
    for r in table.drop_columns(["complete"]).to_pylist():
        r["start"] = int(r["start"].timestamp() * 1000)
        r["end"] = int(r["end"].timestamp() * 1000)
        yield r


class _RollupLogic(StatefulLogic[FoldOut, list[Rolled], RollupState]):
    def __init__(self, state: RollupState) -> None:
        self.state = state

    def on_item(self, value: FoldOut) -> tuple[Iterable[list[Rolled]], bool]:
        rolled = self.state.step(value)
        return ([rolled] if rolled else []), StatefulLogic.RETAIN

    def snapshot(self) -> RollupState:
        return self.state


def _key(_: FoldOut) -> str:
    return KEY


def _value(item: tuple[str, list[Rolled]]) -> list[Rolled]:
    return item[1]


def _bars(rolled: list[Rolled]) -> list[RollupBar] | None:
    return [b for b in rolled if isinstance(b, RollupBar)] or None


def _sums(rolled: list[Rolled]) -> list[WindowSums] | None:
    return [b for b in rolled if isinstance(b, WindowSums)] or None


@dataclass(frozen=True)
class RollupStreams:
    """The rollup step's two outputs."""

    bars: Stream[list[RollupBar]]
    """Final bars and revisions (one list per fold result that caused any)."""
    sums: Stream[list[WindowSums]]
    """Window summaries (one list per fold result that closed minutes)."""


def rollup_stream(
    step_id: str,
    folded: Stream[FoldOut],
    intervals: Sequence[str] = tuple(intraday.INTERVALS),
    *,
    horizon_ms: int = 15 * MINUTE_MS,
) -> RollupStreams:
    """The fold's results to final 5m..4h bars and window summaries."""
    names = tuple(intraday.parse_intervals(",".join(intervals)))
    keyed = op.key_on(f"{step_id}_key", folded, _key)

    def build(resume: RollupState | None) -> _RollupLogic:
        return _RollupLogic(resume or RollupState(names, horizon_ms))

    rolled = op.map(f"{step_id}_values", op.stateful(f"{step_id}_fold", keyed, build), _value)
    return RollupStreams(
        op.filter_map(f"{step_id}_bars", rolled, _bars),
        op.filter_map(f"{step_id}_sums", rolled, _sums),
    )
