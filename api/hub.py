"""One Redis subscription per process, fanned out to every WebSocket of that process.

The live flow publishes each bar update once, on its symbol's channel
``{REDIS_PREFIX}bars:{SYMBOL}``. A :class:`LiveHub` holds the process's only subscription to
bars: to the channels of the symbols its sockets follow (reference-counted, changed as sockets
subscribe and leave), and to the pattern ``bars:*`` only while a socket follows every symbol. A
process whose sockets follow a few symbols thus reads only those, not the market's thousands of
updates a second. It parses each message once and puts the text to send into the bounded queue
of every subscriber that wants it: a thousand sockets cost one Redis connection, not a
thousand. A pattern message goes only to the sockets that follow everything and a channel
message only to the others, so no socket gets an update twice.

Forming 5m..4h bars are formed here, not published by the flow: the hub keeps, for the
symbols it reads, each open window's summary of final minutes (:class:`core.forming.LiveWindows`,
from ``{REDIS_PREFIX}sums:{SYMBOL}`` when it starts reading a symbol, then from the final
minute bars and summaries on the channel) and, from each forming minute bar, sends the forming
bar of every interval (``final`` false), at most once per ``LIVE_ROLLUP_PUBLISH_MS`` per symbol
(the newest waits for its turn). Summaries themselves are not sent to sockets. Alerts (``{REDIS_PREFIX}alerts``) go to every socket of
the key that owns them, whatever symbols it follows; they have a subscription of their own, so
an alert never waits behind a backlog of bar updates. A subscriber whose queue is full is closed as too slow
rather than let grow without bound. When Redis drops, the hub resubscribes with backoff; the
sockets stay open.

:class:`SocketCap` keeps at most ``API_WS_PER_KEY`` sockets per key across every process, in a
Redis sorted set of socket ids scored by an expiry that the hub renews while they live (a
crashed process's sockets expire instead of holding the cap forever).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
import redis
import redis.asyncio as aioredis

from api import metrics
from core.forming import LiveWindows, Minute, minute_of
from core.stores.redis import SUMS, bar_channel

log = logging.getLogger(__name__)
CHANNEL: Final = "bars"
ALERTS_CHANNEL: Final = "alerts"
CLOSE: Final = object()
"""Queued to make a subscriber's sender close its socket."""
SOCKET_TTL_S: Final = 60
_ACQUIRE: Final = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


@dataclass(eq=False)
class Subscriber:
    """One socket's wishes (``symbols``: None for all) and its bounded outbox."""

    key_id: str
    symbols: set[str] | None
    queue: asyncio.Queue[Any]
    socket_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    close_with: tuple[int, str] | None = None

    def wants(self, symbol: object) -> bool:
        """True when a message about ``symbol`` is for this socket."""
        return self.symbols is None or symbol in self.symbols

    def wants_some(self, symbol: object) -> bool:
        """True when this socket follows ``symbol`` by name (not through ``*``)."""
        return self.symbols is not None and symbol in self.symbols

    def offer(self, text: str) -> None:
        """Queue ``text``; a full queue closes the socket as too slow."""
        if self.close_with is not None:
            return
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            self.close(1008, f"too slow: more than {self.queue.maxsize} messages behind")
            metrics.WS_DROPPED.inc()

    def close(self, code: int, reason: str) -> None:
        """Ask the sender to close with ``code`` and ``reason`` (dropping what is queued)."""
        if self.close_with is not None:
            return
        self.close_with = (code, reason)
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(CLOSE)


def alert_frame(payload: str | bytes) -> tuple[object, str] | None:
    """(owner, text to send) for one message of the alerts channel; None when malformed."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or data.get("type") not in ("alert", "alert_summary"):
        return None
    return data.get("owner"), orjson.dumps(
        {"type": data["type"], "data": data.get("data")}
    ).decode()


def frame(payload: str | bytes) -> tuple[object, str] | None:
    """(symbol, text to send) for one published message; None when it is not a JSON object."""
    data = parse(payload)
    return None if data is None else (data.get("symbol"), bar_text(data))


def parse(payload: str | bytes) -> dict[str, Any] | None:
    """One published message as a JSON object; None when it is not one."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def bar_text(data: dict[str, Any]) -> str:
    """The text a socket gets for a bar update."""
    return orjson.dumps({"type": "bar", "data": data}).decode()


class SocketCap:
    """At most ``limit`` sockets per key, counted in Redis across processes."""

    def __init__(self, client: aioredis.Redis, prefix: str, limit: int) -> None:
        self.client = client
        self.prefix = prefix
        self.limit = limit

    def _key(self, key_id: str) -> str:
        return f"{self.prefix}ws:{key_id}"

    async def acquire(self, key_id: str, socket_id: str) -> bool:
        """Count a new socket of ``key_id``; False when the key already holds ``limit``."""
        now = time.time()
        ok = await self.client.eval(
            _ACQUIRE, 1, self._key(key_id), now, self.limit, now + SOCKET_TTL_S, socket_id,
            SOCKET_TTL_S * 2,
        )  # fmt: skip
        return bool(ok)

    async def renew(self, sockets: list[tuple[str, str]]) -> None:
        """Push back the expiry of live sockets (key id, socket id)."""
        if not sockets:
            return
        pipe = self.client.pipeline(transaction=False)
        expiry = time.time() + SOCKET_TTL_S
        for key_id, socket_id in sockets:
            pipe.zadd(self._key(key_id), {socket_id: expiry}, xx=True)
            pipe.expire(self._key(key_id), SOCKET_TTL_S * 2)
        await pipe.execute()

    async def release(self, key_id: str, socket_id: str) -> None:
        """Forget a closed socket."""
        await self.client.zrem(self._key(key_id), socket_id)


class LiveHub:
    """The process's subscription to the bars channel and its subscribers."""

    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str,
        cap: SocketCap,
        alerts_channel: str | None = None,
        *,
        rollup_every_s: float = 1.0,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.channel = bar_channel(prefix, "*")
        self.alerts_channel = alerts_channel
        self.cap = cap
        self.loop = asyncio.get_running_loop()
        self.subscribers: set[Subscriber] = set()
        self._task: asyncio.Task[None] | None = None
        self._alerts_task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()
        self.alerts_subscribed = asyncio.Event()
        self._pubsub: Any = None
        self._following: set[str] = set()  # symbols whose channel is subscribed
        self._pattern = False  # subscribed to every symbol's channel
        self._confirmed: dict[str, asyncio.Event] = {}
        self._sync_lock = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()
        self.windows = LiveWindows()
        self.rollup_every_s = rollup_every_s
        self._fetching: set[str] = set()
        self._waiting: dict[tuple[str, bool], tuple[int, Minute, object]] = {}
        """Per (symbol, pattern audience), the newest forming minute whose bars wait."""
        self._due: dict[tuple[str, bool], float] = {}
        self._forming_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start reading the channel (once)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="live-hub")
        if self._alerts_task is None and self.alerts_channel is not None:
            self._alerts_task = asyncio.create_task(self._run_alerts(), name="alert-hub")
        if self._forming_task is None:
            self._forming_task = asyncio.create_task(self._run_forming(), name="forming-hub")

    def add(self, sub: Subscriber) -> None:
        """Deliver to ``sub`` from now on (its symbols' channels: see :meth:`sync`)."""
        self.subscribers.add(sub)
        metrics.SOCKETS.inc()

    def remove(self, sub: Subscriber) -> None:
        """Stop delivering to ``sub``; channels nobody follows any more are dropped soon after."""
        if sub in self.subscribers:
            self.subscribers.discard(sub)
            metrics.SOCKETS.dec()
            task = self.loop.create_task(self._sync_quietly())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _sync_quietly(self) -> None:
        with contextlib.suppress(redis.RedisError, OSError):
            await self.sync(wait=False)

    def wanted(self) -> tuple[bool, set[str]]:
        """(some socket follows every symbol, the symbols followed by name)."""
        every = any(s.symbols is None for s in self.subscribers)
        named: set[str] = set()
        for s in self.subscribers:
            if s.symbols is not None:
                named |= s.symbols
        return every, named

    async def sync(self, *, wait: bool = True, timeout: float = 2.0) -> None:
        """Subscribe to what the sockets follow and drop the rest.

        With ``wait``, return once Redis confirmed the new subscriptions (at most ``timeout``
        seconds), so an update published after a socket is told "subscribed" reaches it.
        """
        async with self._sync_lock:
            pubsub = self._pubsub
            if pubsub is None:
                return
            every, named = self.wanted()
            added = [bar_channel(self.prefix, s) for s in sorted(named - self._following)]
            dropped_names = self._following - named
            dropped = [bar_channel(self.prefix, s) for s in sorted(dropped_names)]
            news = list(added)
            if every and not self._pattern:
                news.append(self.channel)
            events = [self._confirmed.setdefault(c, asyncio.Event()) for c in news]
            if added:
                await pubsub.subscribe(*added)
            if every and not self._pattern:
                await pubsub.psubscribe(self.channel)
            if dropped:
                await pubsub.unsubscribe(*dropped)
            if self._pattern and not every:
                await pubsub.punsubscribe(self.channel)
            if not every:  # what the hub holds of a symbol it stops reading would go stale
                self._forget(set(self.windows.held) - named if self._pattern else dropped_names)
            self._following, self._pattern = set(named), every
        if wait and events:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), timeout)

    def dispatch_alert(self, payload: str | bytes) -> None:
        """Hand an alert (or a rate-limit summary) to every socket of the key that owns it."""
        parsed = alert_frame(payload)
        if parsed is None:
            log.warning("skipping a message on %s that is not an alert", self.alerts_channel)
            return
        owner, text = parsed
        for sub in list(self.subscribers):
            if sub.key_id == owner:
                sub.offer(text)

    def dispatch(self, payload: str | bytes, *, pattern: bool = False) -> None:
        """Hand one published message to every subscriber that wants it.

        A pattern message (``bars:*``) goes to those following every symbol, a channel message
        to the others. A window summary updates what the hub holds and is not sent; a minute
        bar updates it too (final) or forms the 5m..4h bars (forming).
        """
        data = parse(payload)
        if data is None:
            log.warning("skipping a message on %s that is not a JSON object", self.channel)
            return
        symbol = data.get("symbol")
        if "windows" in data:
            self.windows.on_sums(data)
            return
        self._send(str(symbol), pattern, bar_text(data))
        if "interval" in data or not isinstance(symbol, str):
            return
        minute = minute_of(data)
        if minute is None:
            return
        if data.get("final") is True:
            self.windows.on_final(symbol, *minute)
        elif data.get("final") is False:
            self._waiting[(symbol, pattern)] = (*minute, data.get("updated_at"))
            self._form(symbol, pattern)

    def _send(self, symbol: str, pattern: bool, text: str) -> None:
        for sub in list(self.subscribers):
            if (sub.symbols is None) if pattern else sub.wants_some(symbol):
                sub.offer(text)

    def _form(self, symbol: str, pattern: bool, now: float | None = None) -> None:
        """Send the forming 5m..4h bars of ``symbol``'s waiting minute if its turn has come."""
        key = (symbol, pattern)
        if not self.windows.knows(symbol):
            self._fetch(symbol)
            return
        now = time.monotonic() if now is None else now
        if now < self._due.get(key, 0.0):
            return
        start, values, updated_at = self._waiting.pop(key)
        self._due[key] = now + self.rollup_every_s
        for bar in self.windows.forming(symbol, start, values):
            bar["updated_at"] = updated_at
            self._send(symbol, pattern, bar_text(bar))

    def _fetch(self, symbol: str) -> None:
        """Read ``symbol``'s stored window summaries (once at a time), then form what waits."""
        if symbol in self._fetching:
            return
        self._fetching.add(symbol)

        async def fetch() -> None:
            try:
                raw = await self.client.get(f"{self.prefix}{SUMS}:{symbol}")
                doc = None if raw is None else parse(raw)
                self.windows.on_sums(doc or {"symbol": symbol, "windows": {}})
            except (redis.RedisError, OSError) as exc:
                log.warning("could not read the window summaries of %s (%s)", symbol, exc)
            finally:
                self._fetching.discard(symbol)

        task = self.loop.create_task(fetch())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _forget(self, symbols: set[str]) -> None:
        """Drop what the hub holds about ``symbols`` (no longer read: it would go stale)."""
        for symbol in symbols:
            self.windows.held.pop(symbol, None)
            for pattern in (False, True):
                self._waiting.pop((symbol, pattern), None)
                self._due.pop((symbol, pattern), None)

    async def _run_forming(self) -> None:
        """Send the forming 5m..4h bars that waited for their turn or for their summaries."""
        tick = min(0.1, max(0.01, self.rollup_every_s / 4))
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            for symbol, pattern in list(self._waiting):
                if (symbol, pattern) in self._waiting:
                    self._form(symbol, pattern, now)

    def _on_message(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "message":
            self.dispatch(msg["data"])
        elif kind == "pmessage":
            self.dispatch(msg["data"], pattern=True)
        elif kind in ("subscribe", "psubscribe"):
            name = msg.get("channel")
            name = name.decode() if isinstance(name, bytes) else str(name)
            if (event := self._confirmed.pop(name, None)) is not None:
                event.set()

    async def _run(self) -> None:
        delay = 0.5
        last_renew = time.monotonic()
        while True:
            pubsub = self.client.pubsub()
            try:
                # an anchor nobody publishes on: the connection stays subscribed (and read)
                # while no socket follows anything
                await pubsub.subscribe(self.prefix + CHANNEL)
                async with self._sync_lock:
                    self._pubsub, self._following, self._pattern = pubsub, set(), False
                await self.sync(wait=False)
                self.subscribed.set()
                delay = 0.5
                while True:
                    msg = await pubsub.get_message(timeout=1.0)
                    if msg is not None:
                        self._on_message(msg)
                    if time.monotonic() - last_renew > SOCKET_TTL_S / 3:
                        last_renew = time.monotonic()
                        await self.cap.renew([(s.key_id, s.socket_id) for s in self.subscribers])
            except (redis.RedisError, OSError) as exc:
                self.subscribed.clear()
                async with self._sync_lock:
                    self._pubsub = None
                self._forget(set(self.windows.held))  # messages are lost until resubscribed
                log.warning("live hub lost redis (%s); resubscribing", type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def ready(self, timeout: float = 2.0) -> None:
        """Wait (at most ``timeout`` seconds) until both subscriptions are in place."""
        waits = [self.subscribed.wait()]
        if self.alerts_channel is not None:
            waits.append(self.alerts_subscribed.wait())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*waits), timeout)

    async def _run_alerts(self) -> None:
        delay = 0.5
        channel = self.alerts_channel
        assert channel is not None
        while True:
            pubsub = self.client.pubsub()
            try:
                await pubsub.subscribe(channel)
                self.alerts_subscribed.set()
                delay = 0.5
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if msg is not None and msg.get("type") == "message":
                        self.dispatch_alert(msg["data"])
            except (redis.RedisError, OSError) as exc:
                self.alerts_subscribed.clear()
                log.warning("alert hub lost redis (%s); resubscribing", type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def stop(self, code: int = 1001, reason: str = "server shutting down") -> None:
        """Close every socket with ``code`` and stop reading."""
        for sub in list(self.subscribers):
            sub.close(code, reason)
        for task in (self._task, self._alerts_task, self._forming_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._task = self._alerts_task = self._forming_task = None
