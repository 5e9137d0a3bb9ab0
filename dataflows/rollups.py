"""Live 5m..4h bars: the live flow's minute bars rolled up as they close, by the batch rule.

One stateful step over the fold's results (:class:`dataflows.minute_fold.FoldOut`). It keeps
the final minute bars of every window still open (and of windows closed less than the revision
horizon ago), and emits :class:`RollupBar` events like minute bars: ``final`` true once the
watermark of the symbol's source partition passes the window's end (``revision`` 0), and again
with ``revision`` n+1 when a late trade revises one of its minutes. Every final bar is reduced
by :func:`core.intraday.reduce_sorted`, the arithmetic of batch silver's rollup, over the same
minute values held as columns (:mod:`dataflows.minute_log`), so a final live bar equals the
batch bar of the same window bit for bit, and a close of thousands of windows costs a few
array operations rather than a table built row by row.

A close of thousands of windows goes out in slices (:data:`SLICE_WINDOWS` per turn of the
worker, :meth:`RollupState.emit_pending` on Bytewax's notification): the bars and their sink
write cost hundreds of milliseconds at 10:00 New York, which trades read after the close would
otherwise all wait for, alerts on them included.

Forming bars are not emitted: with the final minutes of a symbol the step emits
:class:`WindowSums`, the summary of each open window's final minutes, and readers combine it
with the forming minute bar they already receive (:mod:`core.forming`, the one arithmetic).
Publishing six forming bars per symbol every second cost the flow and Redis more than the
minute bars themselves at thousands of symbols.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import bytewax.operators as op
import numpy as np
from bytewax.dataflow import Stream
from bytewax.operators import StatefulLogic

from core import forming, intraday
from core.forming import LAST, Minute, window_of
from core.isotime import ms_iso
from dataflows.minute_fold import MINUTE_MS, Event, FoldOut, MinuteBar
from dataflows.minute_log import CLOSE, HIGH, I64, LOW, OPEN, VOLUME, VWAP, MinuteLog

KEY: Final = "rollups"
SLICE_WINDOWS: Final = 2_000
"""Final bars a turn of the worker emits at most (a close of 15,000 takes eight turns)."""
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
    log: MinuteLog = field(default_factory=MinuteLog)
    """Every final minute still needed, as columns (symbols by their index in ``names``)."""
    ids: dict[str, int] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)
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
    pending: dict[WindowKey, None] = field(default_factory=dict)
    """Windows closed whose final bar is still to emit, oldest first (:meth:`emit_pending`)."""
    _ranked: I64 = field(default_factory=lambda: np.zeros(0, np.int64), repr=False, compare=False)

    def step(self, out: FoldOut, *, at_most: int | None = None) -> list[Rolled]:
        """Fold one result of the minute fold; the final bars and window summaries it causes.

        Final bars and revisions of windows the watermark closed or a late trade revised; and
        for each symbol with final minutes in ``out``, its open windows' summaries.
        ``at_most``: emit the final bars of at most this many closed windows now and keep the
        rest :attr:`pending` (None: all; the end of input emits all).
        """
        eof = not out.part
        source = out.part
        finals: set[WindowKey] = set()
        revised: set[WindowKey] = set()
        changed: set[str] = set()
        again: dict[WindowKey, int] = {}  # open windows to summarise afresh, with their end
        newest, windows, sums, intervals = self.newest, self.windows, self.sums, self.intervals
        part_of, ids, add = self.part_of, self.ids, forming.add
        rows: list[int] = []
        starts: list[int] = []
        values: list[Minute] = []
        for b in out.final:
            symbol, start = b.symbol, b.start
            if not eof:
                part_of[symbol] = source
            i = ids.get(symbol)
            if i is None:
                i = ids[symbol] = len(self.names)
                self.names.append(symbol)
            v = _values(b)
            rows.append(i)
            starts.append(start)
            values.append(v)
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
                if s is not None and start > s[LAST] and key not in again:
                    add(s, start, v)  # the next minute in order: no need to start over
                else:
                    again[key] = end
        self.log.append(rows, starts, values)
        if again:
            self._summarise_again(again)
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
        pending = self.pending
        pending.update(dict.fromkeys(sorted(finals, key=self._order)))
        # a revision of a window whose final bar is pending is in that bar when it goes
        keys = {k for k in revised if k not in pending} | self._take(None if eof else at_most)
        rolled: list[Rolled] = list(self._emit(keys))
        rolled += self._summaries(changed)
        self._forget()
        return rolled

    def _order(self, key: WindowKey) -> tuple[int, int, str]:
        """Pending windows go out by end, the shortest interval first, then by symbol."""
        return self.windows[key][0], intraday.INTERVALS[key[0]], key[1]

    def emit_pending(self, at_most: int | None) -> list[RollupBar]:
        """The final bars of the oldest ``at_most`` pending windows (None: all of them).

        A close of thousands of windows (10:00 New York closes 15,000 at 5,000 symbols) costs
        the worker a few hundred milliseconds with its sink; in slices, the trades read between
        them wait for one slice only, and the last bar goes out a few reads later.
        """
        return self._emit(self._take(at_most))

    def _take(self, at_most: int | None) -> set[WindowKey]:
        """The oldest ``at_most`` pending windows (None: all), no longer pending."""
        pending = self.pending
        if at_most is None or at_most >= len(pending):
            keys = set(pending)
            pending.clear()
            return keys
        keys = set()
        for key in pending:
            keys.add(key)
            if len(keys) >= at_most:
                break
        for key in keys:
            del pending[key]
        return keys

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

    def _summarise_again(self, keys: dict[WindowKey, int]) -> None:
        """Summarise open windows afresh from every final minute they hold."""
        lo, hi = self._bounds()
        for (_, symbol, begin), end in keys.items():
            i = self.ids[symbol]
            lo[i], hi[i] = (begin, end) if hi[i] == 0 else (min(lo[i], begin), max(hi[i], end))
        rows = self.log.rows(lo, hi, np.arange(len(self.names), dtype=np.int64))
        held: dict[int, list[tuple[int, Minute]]] = defaultdict(list)
        for i, minute in zip(self.log.sym[rows].tolist(), self.log.minutes(rows), strict=True):
            held[i].append(minute)
        for key, end in keys.items():
            mine = held[self.ids[key[1]]]
            self.sums[key] = forming.summary((st, m) for st, m in mine if key[2] <= st < end)

    def _bounds(self) -> tuple[I64, I64]:
        """Per symbol, an empty range of starts to widen to the windows wanted."""
        n = len(self.names)
        return np.zeros(n, np.int64), np.zeros(n, np.int64)

    def _open(self, key: WindowKey, end: int) -> None:
        """Start following a window: by its end, under its symbol's source partition."""
        self.windows[key] = [end, -1, 0]
        part = self.part_of.get(key[1], "")
        self.ends.setdefault(part, {}).setdefault(end, set()).add(key)

    def __setstate__(self, state: dict[str, Any]) -> None:
        held = state.pop("minutes", None)  # an older version's snapshot: a dict per symbol
        self.__dict__.update(state)
        self.__dict__.setdefault("newest", {})
        self.__dict__.setdefault("pending", {})
        self.__dict__.setdefault("_ranked", np.zeros(0, np.int64))
        if held is not None:
            self.log, self.ids, self.names = MinuteLog(), {}, []
            for symbol, minutes in sorted(held.items()):
                self.ids[symbol] = len(self.names)
                self.names.append(symbol)
                ordered = sorted(minutes.items())
                self.log.append([self.ids[symbol]] * len(ordered), [st for st, _ in ordered],
                                [m for _, m in ordered])  # fmt: skip

    def _emit(self, keys: set[WindowKey]) -> list[RollupBar]:
        """Final bars (and revisions) by the batch rule, :func:`core.intraday.reduce_sorted`.

        By interval, sorted by symbol and start; a symbol with two windows of one interval to
        emit (a revision and a close at once) takes a second pass.
        """
        if not keys:
            return []
        by_interval: dict[str, list[WindowKey]] = defaultdict(list)
        for key in keys:
            by_interval[key[0]].append(key)
        rank = self._rank()
        out: list[RollupBar] = []
        for name, group in sorted(by_interval.items()):
            bars: list[RollupBar] = []
            passes = 0
            while group:
                now: dict[str, WindowKey] = {}
                later: list[WindowKey] = []
                for k in group:
                    if k[1] in now:
                        later.append(k)
                    else:
                        now[k[1]] = k
                bars += self._reduce(name, list(now.values()), rank)
                group, passes = later, passes + 1
            if passes > 1:
                bars.sort(key=lambda b: (b.symbol, b.start))
            for b in bars:
                state = self.windows[(name, b.symbol, b.start)]
                state[1] += 1
                b.revision = state[1]
            out += bars
        return out

    def _rank(self) -> I64:
        """Per symbol index, its place in name order (the order of the batch rule's bars)."""
        names = self.names
        if len(self._ranked) != len(names):
            self._ranked = np.argsort(np.argsort(np.array(names, dtype=object))).astype(np.int64)
        return self._ranked

    def _reduce(self, name: str, keys: list[WindowKey], rank: I64) -> list[RollupBar]:
        """The final bars of ``keys`` (one window per symbol), their revision still to set."""
        lo, hi = self._bounds()
        idx = np.array([self.ids[k[1]] for k in keys], np.int64)
        lo[idx] = [k[2] for k in keys]
        hi[idx] = [self.windows[k][0] for k in keys]
        log = self.log
        rows = log.rows(lo, hi, rank)
        if not len(rows):
            return []
        sym = log.sym[rows]
        begin = lo[sym]
        v = log.values[:, rows]
        r = intraday.reduce_sorted(rank[sym], begin, v[HIGH], v[LOW], v[VOLUME], v[VWAP],
                                   log.trades[rows])  # fmt: skip
        first = sym[r.firsts]
        names = self.names
        return [
            RollupBar(interval=name, symbol=names[i], start=s, end=e, open=o, high=h, low=low,
                      close=c, volume=vol, vwap=None if w != w else w, trades=t, minutes=m,
                      complete=True, final=True, revision=0)
            for i, s, e, o, h, low, c, vol, w, t, m in zip(
                first.tolist(), begin[r.firsts].tolist(), hi[first].tolist(),
                v[OPEN][r.firsts].tolist(), r.high.tolist(), r.low.tolist(),
                v[CLOSE][r.lasts].tolist(), r.volume.tolist(), r.vwap.tolist(),
                r.trades.tolist(), r.minutes.tolist(), strict=True)
        ]  # fmt: skip

    def _forget(self) -> None:
        """Drop what the horizon passed, once per minute of watermark.

        Not per batch: every window is walked.
        """
        if not self.marks:
            return
        edge = min(self.marks.values()) - self.horizon_ms
        edge -= edge % MINUTE_MS
        if edge <= self.forgotten_before:
            return
        self.forgotten_before = edge
        pending = self.pending
        old = [k for k, w in self.windows.items() if w[2] and w[0] < edge and k not in pending]
        for k in old:
            del self.windows[k]
            self.sums.pop(k, None)
        cutoff = self._cutoff(edge)
        if pending:  # never in practice: a slice goes out at every read
            cutoff = min(cutoff, *(k[2] for k in pending))
        self.log.drop_before(cutoff)

    def _cutoff(self, edge: int) -> int:
        """The first minute still needed when windows ending before ``edge`` are forgotten."""
        return edge - max(intraday.INTERVALS[i] for i in self.intervals) * MINUTE_MS


class _RollupLogic(StatefulLogic[FoldOut, list[Rolled], RollupState]):
    def __init__(self, state: RollupState, at_most: int | None) -> None:
        self.state = state
        self.at_most = at_most

    def on_item(self, value: FoldOut) -> tuple[Iterable[list[Rolled]], bool]:
        rolled = self.state.step(value, at_most=self.at_most)
        return ([rolled] if rolled else []), StatefulLogic.RETAIN

    def on_notify(self) -> tuple[Iterable[list[Rolled]], bool]:
        bars: list[Rolled] = list(self.state.emit_pending(self.at_most))
        return ([bars] if bars else []), StatefulLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[list[Rolled]], bool]:
        bars: list[Rolled] = list(self.state.emit_pending(None))
        return ([bars] if bars else []), StatefulLogic.RETAIN

    def notify_at(self) -> dt.datetime | None:
        """At once while final bars are pending: the next slice goes at the worker's next turn."""
        return dt.datetime.now(dt.UTC) if self.state.pending else None

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
    slice_windows: int | None = SLICE_WINDOWS,
) -> RollupStreams:
    """The fold's results to final 5m..4h bars and window summaries.

    ``slice_windows``: final bars go out at most this many per turn of the worker (None: all
    at once), so trades keep flowing through a close of thousands of windows.
    """
    names = tuple(intraday.parse_intervals(",".join(intervals)))
    keyed = op.key_on(f"{step_id}_key", folded, _key)

    def build(resume: RollupState | None) -> _RollupLogic:
        return _RollupLogic(resume or RollupState(names, horizon_ms), slice_windows)

    rolled = op.map(f"{step_id}_values", op.stateful(f"{step_id}_fold", keyed, build), _value)
    return RollupStreams(
        op.filter_map(f"{step_id}_bars", rolled, _bars),
        op.filter_map(f"{step_id}_sums", rolled, _sums),
    )
