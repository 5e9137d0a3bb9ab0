"""Polygon's stocks WebSocket as a Bytewax source (the real service or the simulator).

Speaks Polygon's protocol directly with ``websockets`` instead of ``polygon-api-client``'s
``WebSocketClient``: that client decodes every event into model objects, which costs time and
loses the raw payload a quarantine row must keep. Here the source yields raw text frames (JSON
arrays of events) and :func:`dataflows.operators.decode_frame` parses them in the flow.

The connection is one async generator driven by ``batch_async``: connect, authenticate,
subscribe ``T.<symbols>``, yield frames; on any network error reconnect with capped, jittered
exponential backoff. :class:`PolygonWebSocketSource` yields the raw frames (the ws-ingest task
forwards them to Kinesis); :class:`PolygonChunkSource` yields one
:class:`~dataflows.trades.Chunk` per read for the live flow, marking the first read of every
connection (what came before it is lost: the feed cannot rewind) and reads that found nothing
waiting (so the flow's watermark may follow the wall clock while the feed is quiet). A rejected key is fatal (retrying cannot fix it). The key is sent only in
the auth message and never logged. There is one partition: Polygon allows one connection per
key, so more workers would only fight over it (scale out with Kinesis shards instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import random
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition, batch_async
from pydantic import SecretStr
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from core.secrets import polygon_key as polygon_key  # re-exported: it moved to core.secrets
from core.settings import POLYGON_WS, LiveSettings
from dataflows.trades import Chunk, now_ms

log = logging.getLogger(__name__)
_wire = logging.getLogger(f"{__name__}.wire")
_wire.setLevel(logging.INFO)  # websockets dumps frames at DEBUG, and the auth frame holds the key
SIMULATOR_WS: Final = "127.0.0.1:8010"
"""Where ``python -m dataflows.simulator`` listens by default."""
SIMULATOR_KEY: Final = "simulator"
"""Any non-empty key is accepted by a simulator started without ``--api-key``."""
_LOCAL: Final = ("127.", "localhost", "[::1]", "0.0.0.0")


class AuthError(RuntimeError):
    """Polygon refused the key: fatal, reconnecting cannot help."""


class RetryableError(ConnectionError):
    """The server turned the session down in a way worth retrying (e.g. max_connections)."""


@dataclass(frozen=True, slots=True)
class WsConfig:
    """Where to connect, with which key, for which symbols."""

    url: str
    key: SecretStr
    symbols: tuple[str, ...] = ("*",)

    @property
    def subscription(self) -> str:
        """The ``params`` of the subscribe action, e.g. ``T.*`` or ``T.AAPL,T.MSFT``."""
        return ",".join(f"T.{s}" for s in self.symbols)


def parse_symbols(text: str) -> tuple[str, ...]:
    """``LIVE_SYMBOLS`` (comma-separated, or ``*``) as a tuple."""
    symbols = tuple(dict.fromkeys(s.strip().upper() for s in text.split(",") if s.strip()))
    if not symbols or "*" in symbols:
        return ("*",)
    return symbols


def ws_url(host: str, market: str = "stocks") -> str:
    """``host[:port]`` (or a full ws/wss URL) as the cluster URL; wss except on loopback."""
    if host.startswith(("ws://", "wss://")):
        base = host.rstrip("/")
        return base if base.endswith(f"/{market}") else f"{base}/{market}"
    scheme = "ws" if host.startswith(_LOCAL) else "wss"
    return f"{scheme}://{host.rstrip('/')}/{market}"


def ws_config(settings: LiveSettings) -> WsConfig:
    """Polygon with a key (``socket.polygon.io`` unless overridden), else the simulator."""
    key = polygon_key(settings)
    host = settings.polygon_ws_url or (POLYGON_WS if key is not None else SIMULATOR_WS)
    return WsConfig(
        ws_url(host), key or SecretStr(SIMULATOR_KEY), parse_symbols(settings.live_symbols)
    )


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with full jitter (so many clients do not reconnect at once)."""

    base: float = 0.5
    cap: float = 30.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before reconnect ``attempt`` (0-based)."""
        return random.uniform(0, min(self.cap, self.base * 2.0**attempt))


def _statuses(frame: str | bytes) -> list[dict[str, Any]] | None:
    """The status events of a control frame, or None for a data frame (not parsed)."""
    head = frame[:40] if isinstance(frame, str) else frame[:40].decode("utf-8", "replace")
    if '"status"' not in head:
        return None
    with contextlib.suppress(ValueError):
        doc = json.loads(frame)
        if (
            isinstance(doc, list)
            and doc
            and all(isinstance(e, dict) and e.get("ev") == "status" for e in doc)
        ):
            return doc
    return None


async def _handshake(ws: Any, cfg: WsConfig, timeout: float) -> None:
    """Authenticate and subscribe; returns once Polygon accepted the key."""
    await ws.send(json.dumps({"action": "auth", "params": cfg.key.get_secret_value()}))
    while True:
        frame = await asyncio.wait_for(ws.recv(), timeout)
        for ev in _statuses(frame) or []:
            status = ev.get("status")
            if status == "auth_success":
                await ws.send(json.dumps({"action": "subscribe", "params": cfg.subscription}))
                return
            if status == "auth_failed":
                msg = f"Polygon rejected the API key: {ev.get('message')}"
                raise AuthError(msg)
            if status == "max_connections":
                msg = f"Polygon refused the connection: {ev.get('message')}"
                raise RetryableError(msg)


_NETWORK_ERRORS: Final = (
    OSError,
    TimeoutError,
    RetryableError,
    ConnectionClosed,
    InvalidHandshake,
    InvalidURI,
)


CONNECTED: Final = b"\x00connected"
"""Yielded by :func:`polygon_frames` with ``marks`` after every successful handshake."""


async def polygon_frames(
    cfg: WsConfig, *, backoff: Backoff | None = None, timeout: float = 10.0, marks: bool = False
) -> AsyncIterator[str | bytes]:
    """Raw data frames from Polygon, reconnecting forever on network errors."""
    backoff = backoff or Backoff()
    attempt = 0
    while True:
        try:
            async with ws_connect(cfg.url, open_timeout=timeout, max_size=None, logger=_wire) as ws:
                await _handshake(ws, cfg, timeout)
                log.info("polygon websocket %s: subscribed to %s", cfg.url, cfg.subscription)
                if marks:
                    yield CONNECTED
                async for frame in ws:
                    statuses = _statuses(frame)
                    if statuses is None:
                        attempt = 0  # only data proves the session works: no hot reconnect loop
                        yield frame
                    else:
                        for ev in statuses:
                            log.info("polygon status %s: %s", ev.get("status"), ev.get("message"))
            reason = "closed by the server"
        except _NETWORK_ERRORS as exc:
            reason = f"{type(exc).__name__}: {exc}"
        delay = backoff.delay(attempt)
        attempt += 1
        log.warning("polygon websocket %s %s; reconnecting in %.1fs", cfg.url, reason, delay)
        await asyncio.sleep(delay)


@dataclass
class _Connection:
    cfg: WsConfig
    timeout: dt.timedelta
    batch_size: int
    stop: threading.Event | None
    backoff: Backoff | None
    marks: bool = False
    _loop: asyncio.AbstractEventLoop = field(init=False)
    _batches: Iterator[list[str | bytes]] = field(init=False)

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        frames = polygon_frames(self.cfg, backoff=self.backoff, marks=self.marks)
        self._batches = batch_async(frames, self.timeout, self.batch_size, loop=self._loop)

    def frames(self) -> list[str | bytes]:
        if self.stop is not None and self.stop.is_set():
            raise StopIteration
        return next(self._batches)

    def close(self) -> None:
        loop = self._loop
        tasks = asyncio.all_tasks(loop)
        for t in tasks:
            t.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


class PolygonWebSocketSource(FixedPartitionedSource[str | bytes, None]):
    """Raw frames of Polygon's ``T`` feed; one partition (one connection per key).

    ``stop`` (tests, ``--duration``) ends the stream cleanly, so windows close at EOF.
    """

    def __init__(
        self,
        cfg: WsConfig,
        *,
        timeout: dt.timedelta = dt.timedelta(milliseconds=100),
        batch_size: int = 100,
        stop: threading.Event | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.cfg = cfg
        self.timeout = timeout
        self.batch_size = batch_size
        self.stop = stop
        self.backoff = backoff

    def list_parts(self) -> list[str]:
        """The single connection."""
        return ["polygon-ws"]

    def build_part(
        self, step_id: str, for_part: str, resume_state: None
    ) -> StatefulSourcePartition[str | bytes, None]:
        """Connect lazily: the first ``next_batch`` opens the socket."""
        conn = _Connection(self.cfg, self.timeout, self.batch_size, self.stop, self.backoff)
        return _RawPartition(conn)


class _RawPartition(StatefulSourcePartition[str | bytes, None]):
    def __init__(self, conn: _Connection) -> None:
        self._conn = conn

    def next_batch(self) -> list[str | bytes]:
        return self._conn.frames()

    def snapshot(self) -> None:
        return None  # a live feed cannot be rewound; use Kinesis for replayable input

    def close(self) -> None:
        self._conn.close()


class _ChunkPartition(StatefulSourcePartition[Chunk, None]):
    def __init__(self, part: str, conn: _Connection) -> None:
        self._part = part
        self._conn = conn
        self._closed = False

    def next_batch(self) -> list[Chunk]:
        stop = self._conn.stop
        if stop is not None and stop.is_set() and not self._closed:
            self._closed = True  # one last, empty chunk: the open minutes end cut short
            return [Chunk(self._part, [], now_ms(), closing=True)]
        frames = self._conn.frames()
        connected = any(f is CONNECTED for f in frames)
        if connected:
            frames = [f for f in frames if f is not CONNECTED]
        full = len(frames) >= self._conn.batch_size
        return [Chunk(self._part, frames, now_ms(), caught_up=not full, connected=connected)]

    def snapshot(self) -> None:
        return None  # a live feed cannot be rewound; a restart is a new connection

    def close(self) -> None:
        self._conn.close()


class PolygonChunkSource(FixedPartitionedSource[Chunk, None]):
    """One :class:`~dataflows.trades.Chunk` per read of Polygon's ``T`` feed (the live flow).

    A read that found nothing is still a chunk (empty and caught up): it is how the flow learns
    that the feed is quiet rather than stalled.
    """

    def __init__(
        self,
        cfg: WsConfig,
        *,
        timeout: dt.timedelta = dt.timedelta(milliseconds=100),
        batch_size: int = 100,
        stop: threading.Event | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.cfg = cfg
        self.timeout = timeout
        self.batch_size = batch_size
        self.stop = stop
        self.backoff = backoff

    def list_parts(self) -> list[str]:
        """The single connection."""
        return ["polygon-ws"]

    def build_part(
        self, step_id: str, for_part: str, resume_state: None
    ) -> StatefulSourcePartition[Chunk, None]:
        """Connect lazily; the first read is marked ``connected``."""
        conn = _Connection(
            self.cfg, self.timeout, self.batch_size, self.stop, self.backoff, marks=True
        )
        return _ChunkPartition(for_part, conn)
