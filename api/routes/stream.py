"""``WebSocket /v1/stream``: live bar updates, with subscriptions changed by message.

    connect  /v1/stream?symbols=AAPL,MSFT   (key in X-API-Key, or api_key= where headers
                                             cannot be set; the key needs the stream scope)
    <- {"type": "subscribed", "symbols": ["AAPL", "MSFT"]}
    <- {"type": "bar", "data": {"symbol": "AAPL", ...}}          per update
    <- {"type": "alert", "data": {...}}                         each of the key's alerts
    <- {"type": "alert_summary", "data": {...}}                 alerts over its rate limit
    -> {"action": "subscribe", "symbols": ["NVDA"]}              (or "NVDA,TSLA", or "*")
    <- {"type": "subscribed", "symbols": ["AAPL", "MSFT", "NVDA"]}
    -> {"action": "unsubscribe", "symbols": ["AAPL"]}            ("*" clears all)
    -> {"action": "ping"}   <- {"type": "pong"}

Every refusal or protocol error closes with 1008 and a reason: a wrong key or scope, an
unknown parameter, a bad symbol or message, more than ``API_WS_PER_KEY`` sockets for the key,
or a client too slow to keep up. 1011 means live data is unavailable; 1001 the server is
stopping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Annotated, Any, Final, NoReturn

import orjson
import redis
from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect

from api.deps import API_KEY_HEADER, Res, resolve_key
from api.hub import ALERTS_CHANNEL, CLOSE, LiveHub, SocketCap, Subscriber
from api.params import MAX_SYMBOLS, parse_symbols
from api.problems import Problem, clip
from api.resources import Resources

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["live"])
POLICY_VIOLATION: Final = 1008
INTERNAL_ERROR: Final = 1011
ALLOWED_QUERY: Final = frozenset({"symbols", "api_key"})
MAX_MESSAGE: Final = 16_384


class Refused(Exception):
    """Close the socket with 1008 and this reason."""


def refuse(reason: str) -> NoReturn:
    """Close the socket with 1008 and ``reason``."""
    raise Refused(reason)


def _symbols(value: Any) -> set[str] | None:
    """A subscription's symbols (None for all) from a string or list; Refused when bad."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        text = ",".join(value)
    elif isinstance(value, str):
        text = value
    else:
        refuse("symbols must be a string or a list of strings")
    if text.strip() in ("*", ""):
        return None if text.strip() == "*" else set()
    try:
        return set(parse_symbols(text))
    except Problem as exc:
        refuse(exc.detail)


def apply(current: set[str] | None, message: str) -> tuple[set[str] | None, dict[str, Any]]:
    """The subscription after a client's message, and the reply to send; Refused when bad."""
    if len(message) > MAX_MESSAGE:
        refuse("message too large")
    try:
        doc = orjson.loads(message)
    except orjson.JSONDecodeError:
        refuse("messages must be JSON objects with an action")
    if not isinstance(doc, dict):
        refuse("messages must be JSON objects with an action")
    action = doc.get("action")
    if action == "ping":
        return current, {"type": "pong"}
    if action not in ("subscribe", "unsubscribe"):
        refuse(f"unknown action {clip(repr(action))}: use subscribe, unsubscribe or ping")
    asked = _symbols(doc.get("symbols", ""))
    if action == "subscribe":
        new = None if asked is None or current is None else current | asked
    elif asked is None:
        new = set()
    elif current is None:
        refuse("subscribed to *: unsubscribe from * before single symbols")
    else:
        new = current - asked
    if new is not None and len(new) > MAX_SYMBOLS:
        refuse(f"at most {MAX_SYMBOLS} symbols per socket")
    return new, subscribed(new)


def subscribed(symbols: set[str] | None) -> dict[str, Any]:
    """The acknowledgement of a subscription (``*`` for all)."""
    return {"type": "subscribed", "symbols": ["*"] if symbols is None else sorted(symbols)}


async def hub_of(res: Resources) -> LiveHub:
    """The running loop's hub, started on first use (once, however many sockets connect)."""
    loop = asyncio.get_running_loop()
    if res.hub is None or res.hub.loop is not loop:
        client = await res.async_redis()
        # sockets connecting together all waited above: the first to get here starts the hub
        if res.hub is None or res.hub.loop is not loop:
            prefix = res.settings.redis_prefix
            cap = SocketCap(client, prefix, res.settings.api_ws_per_key)
            res.hub = LiveHub(
                client, prefix, cap, alerts_channel=prefix + ALERTS_CHANNEL,
                rollup_every_s=res.settings.live_rollup_publish_ms / 1000,
            )  # fmt: skip
            res.hub.start()
    hub: LiveHub = res.hub
    return hub


async def _send(ws: WebSocket, sub: Subscriber) -> None:
    while True:
        item = await sub.queue.get()
        if item is CLOSE:
            code, reason = sub.close_with or (1000, "")
            await ws.close(code=code, reason=reason)
            return
        await ws.send_text(item)


async def _receive(ws: WebSocket, sub: Subscriber, hub: LiveHub) -> None:
    while True:
        text = await ws.receive_text()
        try:
            sub.symbols, reply = apply(sub.symbols, text)
        except Refused as exc:
            sub.close(POLICY_VIOLATION, str(exc)[:120])
            return
        await hub.sync()  # the new symbols' channels, before the socket is told
        await ws.send_text(orjson.dumps(reply).decode())


async def _admit(
    ws: WebSocket, res: Resources, symbols: str | None, api_key: str | None
) -> Subscriber:
    unknown = sorted(set(ws.query_params) - ALLOWED_QUERY)
    if unknown:
        raise Refused("unknown query parameter: " + ", ".join(clip(n, 32) for n in unknown[:5]))
    principal = await resolve_key(res, ws.headers.get(API_KEY_HEADER) or api_key)
    if principal is None:
        refuse("missing or invalid API key")
    if "stream" not in principal.scopes:
        refuse("this key lacks the 'stream' scope")
    wanted = _symbols(symbols) if symbols is not None else None
    return Subscriber(principal.id, wanted, asyncio.Queue(res.settings.api_ws_queue))


@router.websocket("/stream")
async def stream(
    ws: WebSocket,
    res: Res,
    symbols: Annotated[str | None, Query(description="comma-separated, or * for all")] = None,
    api_key: Annotated[str | None, Query(description="the key, when headers cannot be set")] = None,
) -> None:
    """Relay live bars; see the module's docstring for the protocol."""
    await ws.accept()
    try:
        sub = await _admit(ws, res, symbols, api_key)
        hub = await hub_of(res)
        if not await hub.cap.acquire(sub.key_id, sub.socket_id):
            refuse(f"this key already holds {res.settings.api_ws_per_key} WebSockets")
    except Refused as exc:
        await ws.close(code=POLICY_VIOLATION, reason=str(exc)[:120])
        return
    except (redis.RedisError, OSError) as exc:
        log.warning("stream unavailable: redis %s", type(exc).__name__)
        await ws.close(code=INTERNAL_ERROR, reason="live updates unavailable")
        return
    hub.add(sub)
    try:
        await hub.ready()  # what is published after "subscribed" reaches the socket
        await hub.sync()
        await ws.send_json(subscribed(sub.symbols))
        tasks = {asyncio.create_task(_send(ws, sub)), asyncio.create_task(_receive(ws, sub, hub))}
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if any(t.exception() is None for t in done) and sub.close_with is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), 5)
        for task in pending:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
                await task
    except WebSocketDisconnect:
        pass
    finally:
        hub.remove(sub)
        with contextlib.suppress(redis.RedisError, OSError):
            await hub.cap.release(sub.key_id, sub.socket_id)
