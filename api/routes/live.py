"""Live data from Redis: ``GET /v1/latest/{symbol}`` and ``GET /v1/latest?symbols=A,B``.

The live flow stores per symbol the latest trade, the forming minute bar and the last final one
(see ``core.stores.redis.LiveStore``); both routes answer from there through :func:`read_latest` (one MGET),
so one symbol and many look the same. Each says how old what it returns is (``as_of``, in
event time) and whether that is older than ``LIVE_STALE_S``, so a client never mistakes a
stalled feed for a quiet price. The WebSocket stream is in :mod:`api.routes.stream`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, Final

import orjson
from fastapi import APIRouter
from starlette.responses import Response

from api.deps import Res, Symbol
from api.models import LatestManyResponse, LatestResponse
from api.params import SymbolsQuery, parse_symbols
from api.problems import Problem, problems
from api.resources import Resources

NO_STORE: Final = {"Cache-Control": "no-store"}

router = APIRouter(prefix="/v1", tags=["live"])


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


def latest_doc(
    symbol: str, raws: Sequence[str | bytes | None], stale_s: float
) -> dict[str, Any] | None:
    """The answer for ``symbol`` from its three raw Redis values; None when Redis has none.

    Built as a plain dict (no model validation on the hot path) in the field order of
    :class:`LatestResponse`, which documents it.
    """
    trade, bar, final = (None if raw is None else dict(orjson.loads(raw)) for raw in raws)
    if trade is None and bar is None and final is None:
        return None
    when = as_of(trade, bar, final)
    stale = when is None or dt.datetime.now(dt.UTC) - when > dt.timedelta(seconds=stale_s)
    return {
        "symbol": symbol, "as_of": when, "stale": stale, "trade": trade, "bar": bar,
        "final": final,
    }  # fmt: skip


def dumps(doc: object) -> bytes:
    """JSON as the response models would write it (UTC instants end in ``Z``)."""
    return orjson.dumps(doc, option=orjson.OPT_UTC_Z)


async def read_latest(res: Resources, symbols: Sequence[str]) -> list[dict[str, Any] | None]:
    """The latest of each symbol, in order, in one MGET on the serving loop (no thread hop)."""
    client = await res.async_redis()  # first: it may start the embedded server, off the loop
    store = res.live_store()
    keys = [k for s in symbols for k in store.live_keys(s)]
    raws = await client.mget(keys)
    stale_s = res.settings.live_stale_s
    return [latest_doc(s, raws[3 * i : 3 * i + 3], stale_s) for i, s in enumerate(symbols)]


@router.get(
    "/latest/{symbol}",
    response_model=LatestResponse,
    responses=problems(404, 503, c404="no live data for this symbol"),
)
async def latest(res: Res, symbol: Symbol) -> Response:
    """The last trade, the forming minute bar and the last final one of ``symbol``."""
    return await latest_response(res, symbol)


async def latest_response(res: Resources, symbol: str) -> Response:
    """The answer of ``GET /v1/latest/{symbol}`` for a valid ``symbol``; Problem 404 if none."""
    (found,) = await read_latest(res, [symbol])
    if found is None:
        raise Problem(404, f"no live data for {symbol}", kind="no-live-data")
    return Response(dumps(found), media_type="application/json", headers=NO_STORE)


@router.get("/latest", response_model=LatestManyResponse, responses=problems(503))
async def latest_many(res: Res, symbols: SymbolsQuery) -> Response:
    """The latest of each of ``symbols``; those without live data are listed in ``missing``."""
    wanted = parse_symbols(symbols)
    found = await read_latest(res, wanted)
    doc = {
        "latest": [v for v in found if v is not None],
        "missing": [s for s, v in zip(wanted, found, strict=True) if v is None],
    }
    return Response(dumps(doc), media_type="application/json", headers=NO_STORE)
