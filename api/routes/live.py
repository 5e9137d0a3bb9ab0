"""Live data from Redis: ``GET /v1/latest/{symbol}`` and ``WebSocket /v1/stream``.

The live flow stores per symbol the latest trade, the forming minute bar and the last final one,
and publishes every bar update on the ``{REDIS_PREFIX}bars`` channel (see
``core.stores.redis.LiveStore``); the stream relays those messages, filtered to the symbols
asked for. ``latest`` says how old what it returns is (``as_of``, in event time) and whether
that is older than ``LIVE_STALE_S``, so a client never mistakes a stalled feed for a quiet price.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, WebSocket, WebSocketDisconnect, status

from api.auth import key_matches, owner_id
from api.deps import API_KEY_HEADER, Res, Symbol
from api.models import ErrorResponse, LatestResponse
from api.resources import Resources
from core.layout import LayoutError, normalise_symbol

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["live"])
stream_router = APIRouter(prefix="/v1", tags=["live"])
"""The WebSocket checks its key itself (header or ``api_key`` query), closing with 1008."""
CHANNEL = "bars"
ALERTS_CHANNEL = "alerts"
POLICY_VIOLATION = 1008
INTERNAL_ERROR = 1011


@router.get(
    "/latest/{symbol}",
    response_model=LatestResponse,
    responses={
        401: {"model": ErrorResponse, "description": "missing or invalid API key"},
        404: {"model": ErrorResponse, "description": "no live data for this symbol"},
    },
)
def latest(res: Res, symbol: Symbol) -> LatestResponse:
    """The last trade, the forming minute bar and the last final one of ``symbol``."""
    trade, bar, final = res.live_store().get_live(symbol)
    if trade is None and bar is None and final is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no live data for {symbol}")
    when = as_of(trade, bar, final)
    limit = dt.timedelta(seconds=res.settings.live_stale_s)
    stale = when is None or dt.datetime.now(dt.UTC) - when > limit
    return LatestResponse(symbol=symbol, as_of=when, stale=stale, trade=trade, bar=bar, final=final)


def _stamp(doc: dict[str, Any] | None, key: str) -> dt.datetime | None:
    raw = None if doc is None else doc.get(key)
    if not isinstance(raw, str):
        return None
    try:
        when = dt.datetime.fromisoformat(raw)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def as_of(
    trade: dict[str, Any] | None, bar: dict[str, Any] | None, final: dict[str, Any] | None
) -> dt.datetime | None:
    """Event time of the newest live fact: the last trade, else the end of the newest bar."""
    if (t := _stamp(trade, "ts")) is not None:
        return t
    ends = [s + dt.timedelta(minutes=1) for d in (bar, final) if (s := _stamp(d, "start"))]
    return max(ends, default=None)


def parse_symbols(raw: str | None) -> frozenset[str] | None:
    """The requested symbols, or None for all (empty or ``*``); ValueError on a bad one."""
    if raw is None or raw.strip() in ("", "*"):
        return None
    return frozenset(normalise_symbol(s) for s in raw.split(",") if s.strip())


def wanted(message: dict[str, Any], symbols: frozenset[str] | None) -> bool:
    """True when ``message`` is about one of ``symbols`` (all when None)."""
    return symbols is None or message.get("symbol") in symbols


def alert_for(message: Any, owner: str) -> dict[str, Any] | None:
    """The WebSocket message for an alert-channel ``message`` when it is ``owner``'s."""
    if not isinstance(message, dict) or message.get("owner") != owner:
        return None
    return {"type": message.get("type"), "data": message.get("data")}


async def _read(
    ws: WebSocket, pubsub: Any, relay: Callable[[Any], dict[str, Any] | None], lock: asyncio.Lock,
    maybe: Callable[[str], bool] | None = None,
) -> None:  # fmt: skip
    """Forward what ``relay`` makes of each message (None: not for this socket).

    ``maybe`` is a cheap test on the raw text that skips messages which cannot be for it.
    """
    while True:
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
        if msg is None or (maybe is not None and not maybe(str(msg["data"]))):
            continue
        try:
            data = json.loads(msg["data"])
        except (TypeError, ValueError):
            log.warning("skipping a message on %s that is not JSON", msg.get("channel"))
            continue
        if (out := relay(data)) is not None:
            async with lock:
                await ws.send_json(out)


async def _relay(ws: WebSocket, res: Resources, symbols: frozenset[str] | None, owner: str) -> None:
    """Bars of the wanted symbols and the owner's alerts.

    Each channel has its own connection and reader, so a burst of bar updates never queues an
    alert behind it.
    """

    def bar(data: Any) -> dict[str, Any] | None:
        ok = isinstance(data, dict) and wanted(data, symbols)
        return {"type": "bar", "data": data} if ok else None

    quoted = [f'"{s}"' for s in symbols] if symbols is not None and len(symbols) <= 64 else None

    def maybe(raw: str) -> bool:  # no wanted symbol in the text: no need to parse it
        return quoted is None or any(q in raw for q in quoted)

    client = await asyncio.to_thread(res.async_redis)  # may start the embedded server
    bars, alerts = client.pubsub(), client.pubsub()
    store = res.live_store()
    try:
        await bars.subscribe(store.channel(CHANNEL))
        await alerts.subscribe(store.channel(ALERTS_CHANNEL))
        await ws.send_json({"type": "subscribed", "symbols": sorted(symbols) if symbols else ["*"]})
        lock = asyncio.Lock()
        await asyncio.gather(
            _read(ws, bars, bar, lock, maybe),
            _read(ws, alerts, lambda data: alert_for(data, owner), lock),
        )
    finally:
        for pubsub in (bars, alerts):
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
        await client.aclose()


async def _until_closed(ws: WebSocket) -> None:
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            await ws.receive_text()


@stream_router.websocket("/stream")
async def stream(
    ws: WebSocket,
    res: Res,
    symbols: Annotated[str | None, Query(description="comma-separated, or * for all")] = None,
    api_key: Annotated[str | None, Query(description="the key, when headers cannot be set")] = None,
) -> None:
    """Relay live bars and the key's alerts, after ``subscribed``.

    ``{"type": "bar", "data": {...}}`` per bar update of the symbols asked for, and
    ``{"type": "alert"}`` / ``{"type": "alert_summary"}`` for the key's alerts.
    """
    key = ws.headers.get(API_KEY_HEADER) or api_key
    if not key_matches(key, res.settings.keys()):
        await ws.close(code=POLICY_VIOLATION, reason="missing or invalid API key")
        return
    try:
        wanted_symbols = parse_symbols(symbols)
    except LayoutError as exc:
        await ws.close(code=POLICY_VIOLATION, reason=str(exc)[:120])
        return
    await ws.accept()
    relay = asyncio.create_task(_relay(ws, res, wanted_symbols, owner_id(key or "")))
    closed = asyncio.create_task(_until_closed(ws))
    done, pending = await asyncio.wait({relay, closed}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect):
            await task
    if relay in done and (error := relay.exception()) is not None:
        if isinstance(error, WebSocketDisconnect):
            return
        log.warning("stream relay failed: %s", type(error).__name__)
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await ws.close(code=INTERNAL_ERROR, reason="live updates unavailable")
