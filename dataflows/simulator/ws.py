"""Polygon's stocks WebSocket: the auth handshake, subscriptions and a replayed T/AM feed.

One pump task advances the :class:`ReplayClock` every ``interval`` seconds, takes the trades
stamped since the previous tick from the market (and the minute bars that just completed), and
sends each authenticated connection the events it subscribed to, as JSON arrays like Polygon.
A key gets ``max_connections`` concurrent connections; one more is told ``max_connections``
and closed with 1008 (policy violation), as Polygon does. The ``ws_disconnect_after`` fault
drops a connection with 1011 after N data messages, which clients treat as a network error.
About one trade in a hundred is sent twice (same id and exchange), as the real feed does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from aiohttp import WSMsgType, web

from dataflows.simulator.clock import ReplayClock
from dataflows.simulator.faults import FaultState, Stats
from dataflows.simulator.intraday import MINUTE_MS, DayPath, Trades
from dataflows.simulator.market import Market

log = logging.getLogger(__name__)
I64 = npt.NDArray[np.int64]
CHANNELS: Final = ("T", "AM", "A", "Q")
MAX_CONNECTIONS_MESSAGE: Final = (
    "Maximum number of websocket connections exceeded. You have reached the connection limit "
    "for your account. Please contact support at https://polygon.io/contact to increase your limit."
)
_SEND_TIMEOUT: Final = 5.0


def resent(trades: Trades) -> npt.NDArray[np.bool_]:
    """The trades sent a second time (same id and exchange), as the real feed now and then does.

    About one in a hundred, chosen by a hash of the sequence number, so reruns repeat the same.
    """
    mixed = (trades.seq.astype(np.uint64) * np.uint64(0x9E3779B1)) >> np.uint64(11)
    picked: npt.NDArray[np.bool_] = (mixed % np.uint64(100)) == 0
    return picked


def status(state: str, message: str) -> str:
    """A Polygon status message (an array holding one status event)."""
    return json.dumps([{"ev": "status", "status": state, "message": message}])


@dataclass(eq=False)
class Connection:
    """One client: its socket, key, subscriptions and how many data messages it was sent."""

    ws: web.WebSocketResponse
    key: str | None = None
    subs: dict[str, set[str]] = field(default_factory=lambda: {c: set() for c in CHANNELS})
    sent: int = 0

    def wants(self, channel: str) -> bool:
        """True when subscribed to anything on ``channel``."""
        return bool(self.subs[channel])


class Feed:
    """The WebSocket endpoint and its pump."""

    def __init__(
        self,
        market: Market,
        clock: ReplayClock,
        faults: FaultState,
        stats: Stats,
        *,
        api_key: str | None = None,
        interval: float = 0.1,
        max_connections: int = 1,
        max_events: int = 1000,
    ) -> None:
        self.market = market
        self.clock = clock
        self.faults = faults
        self.stats = stats
        self.api_key = api_key
        self.interval = interval
        self.max_connections = max_connections
        self.max_events = max_events
        self.conns: set[Connection] = set()
        self._keys: Counter[str] = Counter()
        self._last: tuple[int, int] | None = None
        self._cum: dict[int, tuple[I64, npt.NDArray[np.float64]]] = {}

    # -- connection handling -------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        """Serve one WebSocket connection until it closes."""
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        conn = Connection(ws)
        self.conns.add(conn)
        self.stats.ws("connections")
        try:
            await ws.send_str(status("connected", "Connected Successfully"))
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._action(conn, msg.data)
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            self.conns.discard(conn)
            self._release(conn)
        return ws

    def _release(self, conn: Connection) -> None:
        """Give the connection's slot back to its key (idempotent)."""
        if conn.key is not None:
            self._keys[conn.key] -= 1
            conn.key = None

    async def _action(self, conn: Connection, text: str) -> None:
        try:
            msg = json.loads(text)
            action, params = str(msg["action"]), str(msg.get("params", ""))
        except (ValueError, KeyError, TypeError):
            await conn.ws.send_str(status("error", "invalid message"))
            return
        if action == "auth":
            await self._auth(conn, params)
        elif conn.key is None:
            await conn.ws.send_str(status("error", "not authorized"))
        elif action in ("subscribe", "unsubscribe"):
            await self._subscribe(conn, params, action == "subscribe")
        else:
            await conn.ws.send_str(status("error", f"unknown action {action!r}"))

    async def _auth(self, conn: Connection, key: str) -> None:
        if conn.key is not None:
            await conn.ws.send_str(status("auth_success", "authenticated"))
            return
        if not key or (self.api_key is not None and key != self.api_key):
            self.stats.ws("auth_failed")
            await conn.ws.send_str(status("auth_failed", "authentication failed"))
            await conn.ws.close(code=1008, message=b"authentication failed")
            return
        if self._keys[key] >= self.max_connections:
            self.stats.ws("rejected")
            await conn.ws.send_str(status("max_connections", MAX_CONNECTIONS_MESSAGE))
            await conn.ws.close(code=1008, message=b"max_connections")
            return
        conn.key = key
        self._keys[key] += 1
        await conn.ws.send_str(status("auth_success", "authenticated"))

    async def _subscribe(self, conn: Connection, params: str, on: bool) -> None:
        replies = []
        for topic in (p.strip() for p in params.split(",")):
            channel, _, sym = topic.partition(".")
            if channel not in CHANNELS or not sym:
                replies.append(
                    {"ev": "status", "status": "error", "message": f"invalid subscription: {topic}"}
                )
                continue
            (conn.subs[channel].add if on else conn.subs[channel].discard)(sym)
            if not on and sym == "*":
                conn.subs[channel].clear()
            verb = "subscribed to" if on else "unsubscribed to"
            replies.append({"ev": "status", "status": "success", "message": f"{verb}: {topic}"})
        await conn.ws.send_str(json.dumps(replies))

    # -- the pump -------------------------------------------------------------------------
    async def run(self) -> None:
        """Tick forever (cancelled at shutdown)."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.tick()
            except Exception:  # the pump must survive a bad tick; the error is logged
                log.exception("simulator feed tick failed")

    def restart(self) -> None:
        """Forget the last tick (after the clock was set), so no backlog is replayed."""
        self._last = None

    async def tick(self) -> None:
        """Send the events stamped since the previous tick."""
        pos = self.clock.position()
        if pos.session is None:
            self._last = None
            return
        i = pos.session
        hours = self.market.intraday.hours(i)
        if self._last is None:
            start = pos.now_ms
        elif self._last[0] != i:
            start = hours[0]
        else:
            start = self._last[1]
        self._last = (i, pos.now_ms)
        live = [c for c in self.conns if c.key is not None and (c.wants("T") or c.wants("AM"))]
        if not live or pos.now_ms <= start:
            return
        dp = self.market.intraday.day(i)
        trades = self._trades(dp, live, start, pos.now_ms)
        minutes = self._completed(dp, start, pos.now_ms)
        aggs = self._minute_aggs(dp, live, minutes)
        for conn in live:
            events = self._select(conn, trades, aggs, dp)
            if events:
                await self._send(conn, events)

    def _cols(self, dp: DayPath, conns: list[Connection], channel: str) -> I64:
        subs = set().union(*(c.subs[channel] for c in conns))
        if "*" in subs:
            return np.arange(len(dp.sym), dtype=np.int64)
        return self.market.intraday.columns(dp, sorted(subs))

    def _trades(self, dp: DayPath, conns: list[Connection], start: int, end: int) -> Trades:
        cols = self._cols(dp, [c for c in conns if c.wants("T")], "T")
        return self.market.intraday.trades_ms(dp, start, end, cols)

    @staticmethod
    def _completed(dp: DayPath, start: int, end: int) -> I64:
        first = max(0, (start - dp.open_ms) // MINUTE_MS)
        last = min(dp.minutes, (end - dp.open_ms) // MINUTE_MS)
        return np.array(
            [m for m in range(first, last) if start < dp.open_ms + (m + 1) * MINUTE_MS <= end],
            dtype=np.int64,
        )

    def _minute_aggs(
        self, dp: DayPath, conns: list[Connection], minutes: I64
    ) -> list[dict[str, Any]]:
        am = [c for c in conns if c.wants("AM")]
        if not am or not len(minutes):
            return []
        cols = self._cols(dp, am, "AM")
        mm, cc = np.repeat(minutes, len(cols)), np.tile(cols, len(minutes))
        bars = self.market.intraday.cell_bars(dp, mm, cc)
        cum_v, cum_n = self._cumulative(dp)
        av = cum_v[mm, cc]
        day_vwap = np.round(cum_n[mm, cc] / av, 4)
        out = []
        for r, (sym, v, vw, o, c, h, lo, n) in enumerate(
            zip(
                bars.symbol.tolist(),
                bars.volume.tolist(),
                bars.vwap.tolist(),
                bars.open.tolist(),
                bars.close.tolist(),
                bars.high.tolist(),
                bars.low.tolist(),
                bars.transactions.tolist(),
                strict=True,
            )
        ):
            s = int(bars.t[r])
            out.append(
                {
                    "ev": "AM",
                    "sym": sym,
                    "v": int(v),
                    "av": int(av[r]),
                    "op": float(dp.points[0, cc[r]]),
                    "vw": vw,
                    "o": o,
                    "c": c,
                    "h": h,
                    "l": lo,
                    "a": float(day_vwap[r]),
                    "z": int(v // max(n, 1)),
                    "s": s,
                    "e": s + MINUTE_MS,
                }
            )
        return out

    def _cumulative(self, dp: DayPath) -> tuple[I64, npt.NDArray[np.float64]]:
        hit = self._cum.get(dp.session)
        if hit is None:
            mid = (dp.points[:-1] + dp.points[1:]) / 2.0
            hit = (np.cumsum(dp.volume, axis=0), np.cumsum(mid * dp.volume, axis=0))
            self._cum = {dp.session: hit}
        return hit

    def _select(
        self, conn: Connection, trades: Trades, aggs: list[dict[str, Any]], dp: DayPath
    ) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        t_subs = conn.subs["T"]
        if t_subs and len(trades):
            picked = trades if "*" in t_subs else trades.take(np.isin(trades.symbol, list(t_subs)))
            events.extend(picked.to_events())
            events.extend(picked.take(resent(picked)).to_events())
        am_subs = conn.subs["AM"]
        if am_subs:
            events.extend(a for a in aggs if "*" in am_subs or a["sym"] in am_subs)
        return events

    async def _send(self, conn: Connection, events: list[dict[str, Any]]) -> None:
        limit = self.faults.faults.ws_disconnect_after
        for k in range(0, len(events), self.max_events):
            if conn.ws.closed:
                return
            chunk = events[k : k + self.max_events]
            try:
                await asyncio.wait_for(
                    conn.ws.send_str(json.dumps(chunk, separators=(",", ":"))), _SEND_TIMEOUT
                )
            except (TimeoutError, ConnectionError):
                self.stats.ws("slow_consumer")
                self._release(conn)
                with contextlib.suppress(Exception):
                    await conn.ws.close(code=1008, message=b"slow consumer")
                return
            conn.sent += 1
            self.stats.ws("messages")
            self.stats.ws("events", len(chunk))
            if limit and conn.sent >= limit:
                self.stats.ws("disconnects")
                self._release(conn)
                await conn.ws.close(code=1011, message=b"simulated disconnect")
                return
