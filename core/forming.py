"""Forming 5m..4h bars: a window's summary of its final minutes plus the forming minute.

The live flow does not publish forming 5m..4h bars. When minutes close it stores, per symbol,
the summary of each open window's final minutes (``{prefix}sums:{SYMBOL}``, also published on
the symbol's bar channel); readers that want a forming bar combine that summary with the
forming minute bar they already receive, by :func:`forming`. Final 5m..4h bars are still
computed by the flow with the batch rule (:func:`core.intraday.rollup`). This turns six
documents per symbol per second into one per symbol per minute, and puts the rest on the
readers that want it.

A summary is ``[open, high, low, volume, vwap weight, vwap numerator, trades, minutes, last
start]`` of the window's final minutes in start order; :func:`add` folds the next minute in
with the same sums in the same order as summarising them all again.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping
from typing import Any, Final

from core import calendar, intraday
from core.isotime import ms_iso

MINUTE_MS: Final = 60_000
LAST: Final = 8
"""Slot of a summary's last minute start."""
NO_START: Final = -(2**62)
Minute = tuple[float, float, float, float, float, float | None, int]
"""open, high, low, close, volume, vwap, trades of a minute bar."""
FIELDS: Final = ("open", "high", "low", "volume", "den", "num", "trades", "minutes", "last")
"""A summary's slots, as named in its document."""
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_HOURS: dict[dt.date, tuple[int, int] | None] = {}
_WINDOWS: dict[tuple[int, str], tuple[int, int] | None] = {}


def empty() -> list[Any]:
    """The summary of no minute."""
    return [None, -math.inf, math.inf, 0.0, 0.0, 0.0, 0, 0, NO_START]


def add(s: list[Any], start: int, v: Minute) -> None:
    """Add a minute later than every one in summary ``s``.

    The same sums in the same order as summarising them all again, so a summary can follow
    its window's minutes as they close instead of starting over (240 minutes for a 4h window).
    """
    mo, mh, ml, _, mv, mw, mt = v
    if s[0] is None:
        s[0] = mo
    s[1], s[2], s[3], s[6], s[7] = max(s[1], mh), min(s[2], ml), s[3] + mv, s[6] + mt, s[7] + 1
    if mw is not None:
        s[4], s[5] = s[4] + mv, s[5] + mw * mv
    s[LAST] = start


def first(start: int, v: Minute) -> list[Any]:
    """``add(empty(), start, v)`` in one list: a window's first minute (thousands at a close)."""
    mo, mh, ml, _, mv, mw, mt = v
    den, num = (0.0, 0.0) if mw is None else (0.0 + mv, 0.0 + mw * mv)
    return [mo, max(-math.inf, mh), min(math.inf, ml), 0.0 + mv, den, num, 0 + mt, 1, start]


def summary(minutes: Iterable[tuple[int, Minute]]) -> list[Any]:
    """Summary of (start, minute) pairs in start order."""
    s = empty()
    for start, v in minutes:
        add(s, start, v)
    return s


def forming(
    interval: str, symbol: str, window: tuple[int, int], s: list[Any], b: Minute
) -> dict[str, Any]:
    """The forming bar of ``window`` (start, end ms): summary ``s`` and forming minute ``b``.

    Its fields are those of a live 5m..4h bar (``start``/``end`` in ms here), with ``final``
    and ``complete`` false and ``revision`` 0.
    """
    o, hi, lo, vol, den, num, n, count = s[:LAST]
    bo, bh, bl, bc, bv, bw, bt = b
    has = bw is not None
    den, num = den + (bv if has else 0.0), num + ((bw or 0.0) * bv)
    return {
        "interval": interval, "symbol": symbol, "start": window[0], "end": window[1],
        "open": bo if o is None else o, "high": max(hi, bh), "low": min(lo, bl), "close": bc,
        "volume": vol + bv, "vwap": num / den if den > 0 else None, "trades": n + bt,
        "minutes": count + 1, "complete": False, "final": False, "revision": 0,
    }  # fmt: skip


def _hours(day: dt.date) -> tuple[int, int] | None:
    """(open ms, close ms) of a session, or None."""
    if day not in _HOURS:
        _HOURS[day] = (
            (
                int(calendar.session_open(day).timestamp() * 1000),
                int(calendar.session_close(day).timestamp() * 1000),
            )
            if calendar.is_session(day)
            else None
        )
    return _HOURS[day]


def window_of(start: int, interval: str) -> tuple[int, int] | None:
    """(window start, end) in ms of the regular-session minute at ``start``, else None.

    Bar k of a session covers [open + k*I, open + (k+1)*I), the last one cut at the close.
    """
    key = (start, interval)
    if key in _WINDOWS:
        return _WINDOWS[key]
    utc = _EPOCH + dt.timedelta(milliseconds=start)
    hours = _hours(utc.astimezone(calendar.NEW_YORK).date())
    hit = None
    if hours is not None and hours[0] <= start < hours[1]:
        width = intraday.INTERVALS[interval] * MINUTE_MS
        begin = hours[0] + (start - hours[0]) // width * width
        hit = begin, min(begin + width, hours[1])
    if len(_WINDOWS) > 100_000:
        _WINDOWS.clear()
    _WINDOWS[key] = hit
    return hit


WINDOW: Final = ("start", "end", *FIELDS)
"""The order of a window's array in a summary document: start and end ms, then the summary."""


def sums_doc(symbol: str, windows: Mapping[str, list[Any]]) -> dict[str, Any]:
    """The stored and published document of a symbol's open windows' summaries.

    ``windows``: per interval, ``[start ms, end ms, *summary]`` (:data:`WINDOW`). An array, not
    an object: at a minute close the flow writes one per symbol, thousands at once, and an
    object per window cost six times as much to build and twice the bytes.
    """
    return {"symbol": symbol, "windows": windows}


def minute_of(doc: Mapping[str, Any]) -> tuple[int, Minute] | None:
    """(start ms, values) of a minute bar's document; None when it is not a whole one."""
    try:
        start = dt.datetime.fromisoformat(doc["start"])
        values = (
            float(doc["open"]), float(doc["high"]), float(doc["low"]), float(doc["close"]),
            float(doc["volume"]), None if doc["vwap"] is None else float(doc["vwap"]),
            int(doc["trades"]),
        )  # fmt: skip
    except (KeyError, TypeError, ValueError):
        return None
    if start.tzinfo is None:
        return None
    return int((start - _EPOCH) / dt.timedelta(milliseconds=1)), values


class LiveWindows:
    """Per symbol and interval, the open window's summary, kept from what the flow publishes.

    Fed the symbol's bar events in the order they were published: a final minute bar is added
    to its window's summary when it is the next minute in order (anything else, a revision
    or a minute closing out of order, waits for the flow's summary, which follows it); a
    summary document replaces what is held unless it is older. :meth:`forming` then gives the
    forming 5m..4h bars of a forming minute bar.
    """

    def __init__(self, intervals: Iterable[str] = tuple(intraday.INTERVALS)) -> None:
        self.intervals = tuple(intervals)
        self.held: dict[str, dict[str, tuple[int, int, list[Any]]]] = {}

    def knows(self, symbol: str) -> bool:
        """Whether a summary document (or its absence) was seen for ``symbol``."""
        return symbol in self.held

    def on_sums(self, doc: Mapping[str, Any]) -> None:
        """Take a summary document (``None`` windows: the flow holds none for the symbol)."""
        symbol = str(doc.get("symbol"))
        mine = self.held.setdefault(symbol, {})
        windows = doc.get("windows") or {}
        if not isinstance(windows, Mapping):
            return
        for name, w in windows.items():
            if name not in self.intervals:
                continue
            try:  # an array (WINDOW); an object by field name from a flow before it
                values = [w[f] for f in WINDOW] if isinstance(w, Mapping) else list(w)
                begin, end, s = int(values[0]), int(values[1]), values[2:]
            except (KeyError, TypeError, ValueError, IndexError):
                continue
            if len(s) != len(FIELDS):
                continue
            cur = mine.get(name)
            if cur is None or (begin, s[LAST]) >= (cur[0], cur[2][LAST]):
                mine[name] = (begin, end, s)

    def on_final(self, symbol: str, start: int, v: Minute) -> None:
        """A final minute bar: the next minute of its windows' summaries.

        Ignored for a symbol whose summaries were never seen: they are being read, and the
        summary the flow publishes after this minute includes it.
        """
        mine = self.held.get(symbol)
        if mine is None:
            return
        for name in self.intervals:
            w = window_of(start, name)
            if w is None:
                continue
            cur = mine.get(name)
            if cur is None or cur[0] < w[0]:
                s = empty()
                add(s, start, v)
                mine[name] = (w[0], w[1], s)
            elif cur[0] == w[0] and start > cur[2][LAST]:
                add(cur[2], start, v)

    def forming(self, symbol: str, start: int, v: Minute) -> list[dict[str, Any]]:
        """The forming 5m..4h bars of a forming minute bar (``start``/``end`` as ISO text)."""
        mine = self.held.get(symbol, {})
        out = []
        for name in self.intervals:
            w = window_of(start, name)
            if w is None:
                continue
            cur = mine.get(name)
            same = cur is not None and cur[0] == w[0]
            if same and cur is not None and cur[2][LAST] >= start:
                continue  # the minute is final since: no forming bar of it
            bar = forming(name, symbol, w, cur[2] if same and cur is not None else empty(), v)
            bar["start"], bar["end"] = ms_iso(w[0]), ms_iso(w[1])
            out.append(bar)
        return out
