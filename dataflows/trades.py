"""Polygon trade frames to columnar batches: what the live flow carries instead of ticks.

Bytewax pays a fixed cost per item, and a WebSocket frame or a Kinesis record holds hundreds of
trades, so the flow's items are *chunks* (one source read: many frames) and *trade batches*
(their trades as numpy columns), never single trades. Decoding checks a chunk a column at a
time (orjson parses, sets check types, numpy checks ranges and looks up condition rules); only a
chunk with something odd in it goes through the exact per-event validation, to give each bad
event its reason. Pure: no I/O.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain, count, repeat
from operator import itemgetter
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import orjson

from core.conditions import ConditionRules
from core.layout import SYMBOL_RE

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]
Obj = npt.NDArray[np.object_]
MIN_MS: Final = 946_684_800_000  # 2000-01-01
MAX_MS: Final = 4_102_444_800_000  # 2100-01-01


def now_ms() -> int:
    """The wall clock in Unix milliseconds."""
    return int(dt.datetime.now(dt.UTC).timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class Chunk:
    """One read of a source partition: its raw frames and what the source knows about them.

    ``caught_up``: the read found nothing more waiting (no backlog), so the wall clock may
    advance this partition's watermark while it stays quiet. ``connected``: the first read of a
    new connection or of a restart (a WebSocket cannot rewind): what came before is missing.
    """

    part: str
    frames: list[str | bytes]
    read_at: int
    """Wall clock of the read, Unix ms."""
    caught_up: bool = False
    connected: bool = False
    closing: bool = False
    """The last read before the source stops: the minutes still open are cut short."""


@dataclass(frozen=True, slots=True)
class Reject:
    """An event that is no trade, with its payload and reason (the dead-letter item)."""

    payload: dict[str, Any]
    reason: str
    received_at: int


@dataclass(slots=True)
class TradeBatch:
    """The trades of one chunk as columns, in arrival order."""

    part: str
    read_at: int
    caught_up: bool
    connected: bool
    symbol: Obj
    t: I64
    """SIP timestamp, Unix ms."""
    price: F64
    size: F64
    exchange: I64
    """-1 when absent."""
    id: Obj
    sequence: I64
    """-1 when absent."""
    tape: I64
    conditions: Obj
    """A tuple of ints per trade (empty: a regular sale)."""
    high_low: Bools
    open_close: Bools
    volume: Bools
    rejects: list[Reject] = field(default_factory=list)
    closing: bool = False
    codes: I64 | None = None
    """A number per symbol (the decoder's): grouping by it is cheaper than by strings."""

    grouped: tuple[Obj, I64] | None = field(default=None, repr=False, compare=False)

    def groups(self) -> tuple[Obj, I64]:
        """(symbols, the index of each trade's symbol among them), computed once."""
        if self.grouped is None:
            if self.codes is None:
                self.grouped = np.unique(self.symbol, return_inverse=True)
            else:
                _, first, inverse = np.unique(self.codes, return_index=True, return_inverse=True)
                self.grouped = self.symbol[first], inverse
        return self.grouped

    def __len__(self) -> int:
        return len(self.t)


_NUM: Final = (int, float)
_EMPTY: Final[tuple[int, ...]] = ()


def _bad_trade(ev: dict[str, Any]) -> str | None:
    """Why a ``T`` event is unusable, or None (the slow, exact check)."""
    sym: Any = ev.get("sym")
    p: Any = ev.get("p")
    s: Any = ev.get("s")
    t: Any = ev.get("t")
    if not isinstance(sym, str) or not SYMBOL_RE.match(sym):
        return "sym: missing, not a string or not a ticker"
    if type(p) not in _NUM or not math.isfinite(p) or p <= 0:
        return "p: missing, not a number or not a positive price"
    if type(s) not in _NUM or not math.isfinite(s) or s < 0:
        return "s: missing, not a number or negative"
    if type(t) is not int:
        return "t: missing or not integer milliseconds"
    if not MIN_MS <= t < MAX_MS:
        return "t: outside 2000..2100"
    c = ev.get("c")
    if c is not None and (not isinstance(c, list) or any(type(x) is not int for x in c)):
        return "c: not a list of condition ids"
    return None


class Decoder:
    """Chunks to trade batches under one condition table (it memoises symbols).

    A chunk is checked a column at a time (types by set, ranges with numpy); only a chunk with
    something odd in it goes event by event, to find each bad event's reason.
    """

    def __init__(self, rules: ConditionRules) -> None:
        self.rules = rules
        self._symbols: set[str] = set()
        self._codes: defaultdict[str, int] = defaultdict(count().__next__)
        """A number per symbol, so steps group trades by integers, not strings."""

    def decode(self, chunk: Chunk) -> TradeBatch:
        """Every trade of the chunk's frames; everything else as a reject with its reason."""
        rejects: list[Reject] = []
        events: list[Any] = []
        at = chunk.read_at
        for raw in chunk.frames:
            try:
                doc = _loads(raw)
            except (ValueError, UnicodeDecodeError) as exc:
                text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
                rejects.append(Reject({"raw": text}, f"malformed JSON: {exc}", at))
                continue
            if type(doc) is list:
                events.extend(doc)
            else:
                events.append(doc)
        if not self._plain(events):
            events = self._screen(self._trades(events, rejects, at), rejects, at)
        return self._columns(chunk, events, rejects)

    def _plain(self, events: list[Any]) -> bool:
        """Whether every event is a well-formed trade (checked column by column)."""
        if not events:
            return True
        try:
            kinds, sym, p, s, t = zip(*map(_CORE, events), strict=True)
            if set(kinds) != _T:
                return False
            if not self._symbols.issuperset(sym) and not self._learn(set(sym)):
                return False
            c = [e.get("c") for e in events]
        except (KeyError, TypeError, AttributeError):
            return False
        if not (
            set(map(type, t)) == _INT
            and _NUM_TYPES.issuperset(map(type, p))
            and _NUM_TYPES.issuperset(map(type, s))
            and _COND_TYPES.issuperset(map(type, c))
            and _INT.issuperset(map(type, chain.from_iterable(x for x in c if x)))
        ):
            return False
        try:
            ts = np.array(t, dtype=np.int64)
        except OverflowError:
            return False
        ps = np.array(p, dtype=np.float64)
        ss = np.array(s, dtype=np.float64)
        return bool(
            ((ts >= MIN_MS) & (ts < MAX_MS)).all()
            and ((ps > 0) & (ps < math.inf)).all()
            and ((ss >= 0) & (ss < math.inf)).all()
        )

    def _learn(self, symbols: set[Any]) -> bool:
        """Remember new tickers; False when one is not a ticker."""
        for sym in symbols - self._symbols:
            if not isinstance(sym, str) or not SYMBOL_RE.match(sym):
                return False
            self._symbols.add(sym)
        return True

    @staticmethod
    def _trades(events: list[Any], rejects: list[Reject], at: int) -> list[dict[str, Any]]:
        """The ``T`` events; anything else but status messages rejected with its reason."""
        good: list[dict[str, Any]] = []
        for ev in events:
            if type(ev) is not dict:
                rejects.append(Reject({"raw": ev}, "event is not an object", at))
                continue
            kind = ev.get("ev")
            if kind == "T":
                good.append(ev)
            elif kind != "status":
                rejects.append(Reject(ev, f"unsupported event type {kind!r}", at))
        return good

    def _screen(
        self, events: list[dict[str, Any]], rejects: list[Reject], at: int
    ) -> list[dict[str, Any]]:
        ok: list[dict[str, Any]] = []
        for ev in events:
            reason = _bad_trade(ev)
            if reason is None:
                self._symbols.add(ev["sym"])
                ok.append(ev)
            else:
                rejects.append(Reject(ev, reason, at))
        return ok

    def _columns(
        self, chunk: Chunk, evs: list[dict[str, Any]], rejects: list[Reject]
    ) -> TradeBatch:
        n = len(evs)
        if n:
            _, sym, p, s, t = zip(*map(_CORE, evs), strict=True)
        else:
            sym = p = s = t = ()
        conds = [e.get("c") or _EMPTY for e in evs]
        lengths = np.fromiter(map(len, conds), np.int64, n)
        ids = np.fromiter(chain.from_iterable(conds), np.int64, int(lengths.sum()))
        high_low, open_close, volume = self.rules.flags(lengths, ids)
        try:
            x, i, q, z = zip(*map(_OPTIONAL, evs), strict=True) if n else ((), (), (), ())
        except KeyError:  # some trade lacks one: absent as -1 (None for the id)
            x, q, z = (tuple(map(dict.get, evs, repeat(k), repeat(-1))) for k in ("x", "q", "z"))
            i = tuple(map(dict.get, evs, repeat("i")))
        return TradeBatch(
            part=chunk.part,
            read_at=chunk.read_at,
            caught_up=chunk.caught_up,
            connected=chunk.connected,
            symbol=np.fromiter(sym, object, n),
            t=np.array(t, dtype=np.int64),
            price=np.array(p, dtype=np.float64),
            size=np.array(s, dtype=np.float64),
            exchange=_ints(x),
            id=np.fromiter(i, object, n),
            sequence=_ints(q),
            tape=_ints(z),
            conditions=np.fromiter(conds, object, n),
            codes=np.fromiter(map(self._codes.__getitem__, sym), np.int64, n),
            high_low=high_low,
            open_close=open_close,
            volume=volume,
            rejects=rejects,
            closing=chunk.closing,
        )


_CORE: Final = itemgetter("ev", "sym", "p", "s", "t")
_OPTIONAL: Final = itemgetter("x", "i", "q", "z")
_T: Final = {"T"}
_INT: Final = {int}
_NUM_TYPES: Final = {int, float}
_COND_TYPES: Final = {list, type(None)}


def _loads(raw: str | bytes) -> Any:
    """Orjson first (several times faster); the standard parser for what it refuses.

    orjson refuses ``NaN`` and integers beyond 64 bits, which the standard parser reads: such
    a frame's events then get their own reasons instead of the whole frame being rejected.
    """
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def _ints(values: Sequence[Any]) -> I64:
    """Optional integer fields as int64, -1 where absent or not an int64 integer."""
    if set(map(type, values)) <= _INT:
        try:
            return np.array(values, dtype=np.int64)
        except OverflowError:
            pass
    return np.array([_int(v) for v in values], dtype=np.int64)


def _int(v: object) -> int:
    ok = isinstance(v, int) and not isinstance(v, bool) and -(2**63) <= v < 2**63
    return v if ok else -1  # type: ignore[return-value]
