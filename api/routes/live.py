"""Live data from Redis: ``GET /v1/latest/{symbol}`` and ``GET /v1/latest?symbols=A,B``.

The live flow stores per symbol the latest trade, the forming minute bar and the last final one
(see ``core.stores.redis.LiveStore``); both routes answer from there through :func:`latest_of`,
so one symbol and many look the same. Each says how old what it returns is (``as_of``, in
event time) and whether that is older than ``LIVE_STALE_S``, so a client never mistakes a
stalled feed for a quiet price. The WebSocket stream is in :mod:`api.routes.stream`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from starlette.responses import Response

from api.deps import Res, Symbol
from api.models import LatestManyResponse, LatestResponse
from api.params import SymbolsQuery, parse_symbols
from api.problems import Problem, problems
from core.stores.redis import LiveStore

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


def latest_of(store: LiveStore, symbol: str, stale_s: float) -> LatestResponse | None:
    """The last trade, forming bar and last final bar of ``symbol``; None when Redis has none."""
    trade, bar, final = store.get_live(symbol)
    if trade is None and bar is None and final is None:
        return None
    when = as_of(trade, bar, final)
    stale = when is None or dt.datetime.now(dt.UTC) - when > dt.timedelta(seconds=stale_s)
    return LatestResponse(symbol=symbol, as_of=when, stale=stale, trade=trade, bar=bar, final=final)


@router.get(
    "/latest/{symbol}",
    response_model=LatestResponse,
    responses=problems(404, 503, c404="no live data for this symbol"),
)
def latest(res: Res, symbol: Symbol, response: Response) -> LatestResponse:
    """The last trade, the forming minute bar and the last final one of ``symbol``."""
    found = latest_of(res.live_store(), symbol, res.settings.live_stale_s)
    if found is None:
        raise Problem(404, f"no live data for {symbol}", kind="no-live-data")
    response.headers["Cache-Control"] = "no-store"
    return found


@router.get("/latest", response_model=LatestManyResponse, responses=problems(503))
async def latest_many(res: Res, symbols: SymbolsQuery, response: Response) -> LatestManyResponse:
    """The latest of each of ``symbols``; those without live data are listed in ``missing``."""
    wanted = parse_symbols(symbols)

    def read() -> LatestManyResponse:
        store = res.live_store()
        found = {s: latest_of(store, s, res.settings.live_stale_s) for s in wanted}
        return LatestManyResponse(
            latest=[v for v in found.values() if v is not None],
            missing=[s for s, v in found.items() if v is None],
        )

    response.headers["Cache-Control"] = "no-store"
    return await run_in_threadpool(read)
