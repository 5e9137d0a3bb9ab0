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
from core.forming import LAST, NO_START, Minute, window_of
from core.isotime import ms_iso
from dataflows.minute_fold import MINUTE_MS, Event, FoldOut, MinuteBar
from dataflows.minute_log import CLOSE, HIGH, I64, LOW, OPEN, VOLUME, VWAP, MinuteLog
from dataflows.open_sums import LAST as LAST_SLOT
from dataflows.open_sums import OpenSums

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


def _columns(starts: I64, interval: str) -> tuple[I64, I64]:
    """(begin, end) of the windows of the minutes at ``starts`` (NO_START: none, or no minute)."""
    values, inverse = np.unique(starts, return_inverse=True)
    begin = np.full(len(values), NO_START, np.int64)
    end = np.full(len(values), NO_START, np.int64)
    for p, start in enumerate(values.tolist()):
        w = window_of(start, interval) if start > NO_START else None
        if w is not None:
            begin[p], end[p] = w
    return begin[inverse], end[inverse]


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
    open: OpenSums = field(init=False, repr=False, compare=False)
    """Per interval and symbol, the summary of the open window of its newest minute."""
    forgotten_before: int = -_END
    """Windows ending before this minute are dropped (the last edge :meth:`_forget` used)."""
    newest: dict[str, int] = field(default_factory=dict)
    """Per symbol, the start of its newest final minute."""
    pending: dict[WindowKey, None] = field(default_factory=dict)
    """Windows closed whose final bar is still to emit, oldest first (:meth:`emit_pending`)."""
    _ranked: I64 = field(default_factory=lambda: np.zeros(0, np.int64), repr=False, compare=False)
    _slot: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.open = OpenSums(len(self.intervals))
        self._slot = {name: j for j, name in enumerate(self.intervals)}

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
        part_of, ids, names = self.part_of, self.ids, self.names
        rows: list[int] = []
        starts: list[int] = []
        values: list[Minute] = []
        turn: list[int] = []  # per minute, how many of its symbol's came before it in ``out``
        seen: dict[int, int] = {}
        for b in out.final:
            symbol = b.symbol
            if not eof:
                part_of[symbol] = source
            i = ids.get(symbol)
            if i is None:
                i = ids[symbol] = len(names)
                names.append(symbol)
            rows.append(i)
            starts.append(b.start)
            values.append(_values(b))
            k = seen.get(i, 0)
            seen[i] = k + 1
            turn.append(k)
        base = self.log.n
        self.log.append(rows, starts, values)
        self.open.reserve(len(names))
        if rows:
            at = np.arange(len(rows))
            turns = np.array(turn, np.int64)
            for k in range(int(turns.max()) + 1):  # a symbol's minutes in the order they came
                self._fold(at if k == 0 and len(seen) == len(rows) else at[turns == k], base,
                           values, changed, revised, again)  # fmt: skip
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
        slot = self._slot
        for key in finals:
            self.windows[key][2] = 1
            self.open.drop(slot[key[0]], ids[key[1]], key[2])
        pending = self.pending
        pending.update(dict.fromkeys(sorted(finals, key=self._order)))
        # a revision of a window whose final bar is pending is in that bar when it goes
        keys = {k for k in revised if k not in pending} | self._take(None if eof else at_most)
        rolled: list[Rolled] = list(self._emit(keys))
        rolled += self._summaries(changed)
        self._forget()
        return rolled

    def _fold(self, at: I64, base: int, values: list[Minute], changed: set[str],
              revised: set[WindowKey], again: dict[WindowKey, int]) -> None:  # fmt: skip
        """Fold minutes of distinct symbols (rows ``base + at`` of the log).

        A minute later than its symbol's newest goes through array operations per interval:
        the next minute of the window held (:meth:`OpenSums.add`) or the first of a new one.
        Anything else (a revision, a minute closing out of order) goes one by one.
        """
        log, newest, names = self.log, self.newest, self.names
        rows = base + at
        sym = log.sym[rows].astype(np.int64)
        start = log.start[rows]
        old = np.array([newest.get(names[i], -_END) for i in sym.tolist()], np.int64)
        fast = start > old
        for i, st in zip(sym[fast].tolist(), start[fast].tolist(), strict=True):
            newest[names[i]] = st
        every = self.intervals
        slow = [(int(a), i, every) for a, i in zip(at[~fast], sym[~fast].tolist(), strict=True)]
        if fast.any():
            slow += self._fold_next(at[fast], rows[fast], sym[fast], start[fast], old[fast],
                                    changed)  # fmt: skip
        for a, i, only in slow:
            self._fold_one(i, int(log.start[base + a]), values[a], only, changed, revised,
                           again)  # fmt: skip

    def _fold_next(self, at: I64, rows: I64, sym: I64, start: I64, old: I64,
                   changed: set[str]) -> list[tuple[int, int, tuple[str, ...]]]:  # fmt: skip
        """Minutes later than their symbol's newest, by array: the next of a held window.

        Or a new window's first. Returns what is left to fold one by one: (minute, symbol,
        intervals).
        """
        log, names, opened = self.log, self.names, self.open
        v, trades = log.values[:, rows], log.trades[rows]
        touched = np.zeros(len(at), bool)
        rest = np.zeros((len(self.intervals), len(at)), bool)
        for j, name in enumerate(self.intervals):
            begin, end = _columns(start, name)
            was, _ = _columns(old, name)
            has = begin != NO_START
            held = opened.begin[j, sym]
            same = has & (held == begin) & (start > opened.i[j, LAST_SLOT, sym])
            new = has & ~same & (begin != was) & (held != begin)
            rest[j] = has & ~same & ~new
            if same.any():
                opened.add(j, sym[same], start[same], v[:, same], trades[same])
            opened.begin[j, sym[~same]] = NO_START  # no longer the newest minute's window
            if new.any():
                fresh = np.flatnonzero(new)
                for p, i, b, e in zip(
                    fresh.tolist(),
                    sym[fresh].tolist(),
                    begin[fresh].tolist(),
                    end[fresh].tolist(),
                    strict=True,
                ):
                    key = (name, names[i], b)
                    if key in self.windows:  # known after all (no newest in an old snapshot)
                        new[p] = False
                        rest[j, p] = True
                    else:
                        self._open(key, e)
                if new.any():
                    opened.first(j, sym[new], begin[new], end[new], start[new], v[:, new],
                                 trades[new])  # fmt: skip
            touched |= same | new
        changed.update(names[i] for i in sym[touched].tolist())
        left = np.flatnonzero(rest.any(axis=0))
        return [(int(at[p]), int(sym[p]), tuple(n for j, n in enumerate(self.intervals)
                                                if rest[j, p])) for p in left.tolist()]  # fmt: skip

    def _fold_one(self, i: int, start: int, v: Minute, only: tuple[str, ...],
                  changed: set[str], revised: set[WindowKey],
                  again: dict[WindowKey, int]) -> None:  # fmt: skip
        """One minute, in the windows of intervals ``only``, one by one.

        The rule the array path follows for the usual case.
        """
        symbol = self.names[i]
        windows, opened, slot = self.windows, self.open, self._slot
        mine = {name: begin for name, begin, _ in _windows_at(self.newest[symbol], self.intervals)}
        for name, begin, end in _windows_at(start, only):
            key = (name, symbol, begin)
            w = windows.get(key)
            j = slot[name]
            if w is None:  # the window's first final minute
                self._open(key, end)
                if mine.get(name) == begin:
                    opened.put(j, i, begin, end, forming.first(start, v))
                changed.add(symbol)
                continue
            if w[2]:
                revised.add(key)
                continue
            changed.add(symbol)
            if mine.get(name) != begin:
                continue  # an older window: only the newest minute's are summarised
            s = opened.get(j, i, begin)
            if s is not None and start > s[LAST] and key not in again:
                forming.add(s, start, v)  # the next minute in order: no need to start over
                opened.put(j, i, begin, end, s)
            else:
                again[key] = end

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
        ordered = sorted(symbols)
        held = self.open.windows(np.array([self.ids[x] for x in ordered], np.int64),
                                 self.intervals)  # fmt: skip
        return [WindowSums(symbol, w) for symbol, w in zip(ordered, held, strict=True)]

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
        for (name, symbol, begin), end in keys.items():
            w = window_of(self.newest[symbol], name)
            if w is None or w[0] != begin:
                continue  # no longer the newest minute's window: its summary is not published
            i = self.ids[symbol]
            s = forming.summary((st, m) for st, m in held[i] if begin <= st < end)
            self.open.put(self._slot[name], i, begin, end, s)

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
        sums = state.pop("sums", None)  # an older version's: a summary per open window
        self.__dict__.update(state)
        self.__dict__.setdefault("newest", {})
        self.__dict__.setdefault("pending", {})
        self.__dict__.setdefault("_ranked", np.zeros(0, np.int64))
        self._slot = {name: j for j, name in enumerate(self.intervals)}
        if held is not None:
            self.log, self.ids, self.names = MinuteLog(), {}, []
            for symbol, minutes in sorted(held.items()):
                self.ids[symbol] = len(self.names)
                self.names.append(symbol)
                ordered = sorted(minutes.items())
                self.log.append([self.ids[symbol]] * len(ordered), [st for st, _ in ordered],
                                [m for _, m in ordered])  # fmt: skip
        if sums is not None:
            self.open = OpenSums(len(self.intervals))
            self.open.reserve(len(self.names))
            for symbol, newest in self.newest.items():
                for name, begin, end in _windows_at(newest, self.intervals):
                    s = sums.get((name, symbol, begin))
                    if s is not None:
                        self.open.put(self._slot[name], self.ids[symbol], begin, end, s)

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
