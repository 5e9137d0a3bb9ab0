"""``GET /v1/bars/{symbol}``: daily bars (Postgres or lake) and Fibonacci bars (silver)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status

from api import daily, fibonacci
from api.deps import Res, Symbol
from api.models import BarsResponse, DailyBar, ErrorResponse, FibBar, Interval
from api.resources import Resources

router = APIRouter(prefix="/v1", tags=["bars"])
MAX_LIMIT = 100_000


def _daily(
    res: Resources, symbol: str, start: dt.date | None, end: dt.date | None, limit: int | None
) -> list[dict[str, Any]]:
    today = dt.datetime.now(dt.UTC).date()
    first = daily.preferred_source(start, today, res.settings.cache_window_days)
    order = ("postgres", "lake") if first == "postgres" else ("lake", "postgres")
    for source in order:
        if source == "postgres":
            with res.postgres() as conn:
                rows = daily.read_postgres(conn, symbol, start, end, limit)
        else:
            rows = daily.read_lake(res.lake(), symbol, start, end, limit)
        if rows:
            return rows
    return []


def _known(res: Resources, symbol: str) -> bool:
    if daily.symbol_in_lake(res.lake(), symbol):
        return True
    with res.postgres() as conn:
        return daily.symbol_in_postgres(conn, symbol)


@router.get(
    "/bars/{symbol}",
    response_model=BarsResponse,
    responses={
        400: {"model": ErrorResponse, "description": "bad symbol, interval or date"},
        401: {"model": ErrorResponse, "description": "missing or invalid API key"},
        404: {"model": ErrorResponse, "description": "no data for this symbol"},
    },
)
def bars(
    res: Res,
    symbol: Symbol,
    interval: Annotated[Interval, Query(description="1d, or a Fibonacci length")] = "1d",
    start: Annotated[dt.date | None, Query(description="first date (YYYY-MM-DD)")] = None,
    end: Annotated[dt.date | None, Query(description="last date (YYYY-MM-DD)")] = None,
    limit: Annotated[
        int | None, Query(ge=1, le=MAX_LIMIT, description="only the most recent N bars")
    ] = None,
) -> BarsResponse:
    """Bars ascending by date; Fibonacci bars are filtered on ``start_date``."""
    if start is not None and end is not None and end < start:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, detail=f"end {end} is before start {start}"
        )
    if interval == "1d":
        rows = _daily(res, symbol, start, end, limit)
        out: list[DailyBar] | list[FibBar] = [DailyBar.model_validate(r) for r in rows]
    else:
        n = int(interval.removesuffix("d"))
        rows = fibonacci.read_bars(res.lake(), symbol, n, start, end, limit)
        out = [FibBar.model_validate(r) for r in rows]
    if not rows and not _known(res, symbol):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no data for symbol {symbol}")
    return BarsResponse(symbol=symbol, interval=interval, bars=out)
