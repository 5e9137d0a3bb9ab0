"""Polygon trade frames to columnar batches: what the live flow carries instead of ticks.

Bytewax pays a fixed cost per item, and a WebSocket frame or a Kinesis record holds hundreds of
trades, so the flow's items are *chunks* (one source read: many frames) and *trade batches*
(their trades as numpy columns), never single trades. Decoding is the one per-trade Python loop;
it checks each event cheaply and sends anything odd through the slow, exact validation of
:func:`dataflows.operators.parse_trade` only to get its reason. Pure: no I/O.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

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
    """Chunks to trade batches under one condition table (it memoises symbols and rules)."""

    def __init__(self, rules: ConditionRules) -> None:
        self.rules = rules
        self._symbols: set[str] = set()

    def decode(self, chunk: Chunk) -> TradeBatch:
        """Every trade of the chunk's frames; everything else as a reject with its reason."""
        rejects: list[Reject] = []
        good: list[dict[str, Any]] = []
        at = chunk.read_at
        for raw in chunk.frames:
            try:
                doc = json.loads(raw)
            except (ValueError, UnicodeDecodeError) as exc:
                text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
                rejects.append(Reject({"raw": text}, f"malformed JSON: {exc}", at))
                continue
            for ev in doc if isinstance(doc, list) else [doc]:
                if type(ev) is not dict:
                    rejects.append(Reject({"raw": ev}, "event is not an object", at))
                    continue
                kind = ev.get("ev")
                if kind == "T":
                    good.append(ev)
                elif kind != "status":
                    rejects.append(Reject(ev, f"unsupported event type {kind!r}", at))
        good = self._screen(good, rejects, at)
        return self._columns(chunk, good, rejects)

    def _screen(
        self, events: list[dict[str, Any]], rejects: list[Reject], at: int
    ) -> list[dict[str, Any]]:
        known = self._symbols
        ok: list[dict[str, Any]] = []
        for ev in events:
            p: Any = ev.get("p")
            s: Any = ev.get("s")
            t: Any = ev.get("t")
            if (
                ev.get("sym") in known
                and type(t) is int
                and MIN_MS <= t < MAX_MS
                and type(p) in _NUM
                and 0 < p < math.inf
                and type(s) in _NUM
                and 0 <= s < math.inf
                and (ev.get("c") is None or type(ev["c"]) is list)
            ):
                ok.append(ev)
                continue
            reason = _bad_trade(ev)
            if reason is None:
                known.add(ev["sym"])
                ok.append(ev)
            else:
                rejects.append(Reject(ev, reason, at))
        return ok

    def _columns(
        self, chunk: Chunk, evs: list[dict[str, Any]], rejects: list[Reject]
    ) -> TradeBatch:
        n = len(evs)
        conds = [tuple(c) if (c := e.get("c")) else _EMPTY for e in evs]
        combined = self.rules.combined
        rules = [combined(c) for c in conds]
        sym = np.empty(n, dtype=object)
        sym[:] = [e["sym"] for e in evs]
        ids = np.empty(n, dtype=object)
        ids[:] = [e.get("i") for e in evs]
        cond_col = np.empty(n, dtype=object)
        cond_col[:] = conds
        return TradeBatch(
            part=chunk.part,
            read_at=chunk.read_at,
            caught_up=chunk.caught_up,
            connected=chunk.connected,
            symbol=sym,
            t=np.fromiter((e["t"] for e in evs), np.int64, n),
            price=np.fromiter((e["p"] for e in evs), np.float64, n),
            size=np.fromiter((e["s"] for e in evs), np.float64, n),
            exchange=_ints([e.get("x", -1) for e in evs]),
            id=ids,
            sequence=_ints([e.get("q", -1) for e in evs]),
            tape=_ints([e.get("z", -1) for e in evs]),
            conditions=cond_col,
            high_low=np.fromiter((r.high_low for r in rules), np.bool_, n),
            open_close=np.fromiter((r.open_close for r in rules), np.bool_, n),
            volume=np.fromiter((r.volume for r in rules), np.bool_, n),
            rejects=rejects,
            closing=chunk.closing,
        )


def _ints(values: list[Any]) -> I64:
    """Optional integer fields as int64, -1 where absent or not an integer."""
    if all(type(v) is int for v in values):
        return np.array(values, dtype=np.int64)
    return np.array([_int(v) for v in values], dtype=np.int64)


def _int(v: object) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else -1
