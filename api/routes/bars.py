"""``GET /v1/bars/{symbol}``: daily bars (Postgres or lake) and Fibonacci bars (silver)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status

from api import adjusted as adjusted_bars
from api import daily, fibonacci, intraday
from api.deps import MAX_LIMIT, Res, Symbol
from api.models import (
    Adjusted,
    Adjustment,
    BarsResponse,
    DailyBar,
    ErrorResponse,
    FibBar,
    Interval,
)
from api.resources import Resources
from core.calendar import NEW_YORK

router = APIRouter(prefix="/v1", tags=["bars"])


def _daily(
    res: Resources, symbol: str, start: dt.date | None, end: dt.date | None, limit: int | None
) -> tuple[list[dict[str, Any]], str]:
    """Raw rows and where they came from."""
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
            return rows, source
    return [], order[0]


def _date(w: dt.date | dt.datetime | None) -> dt.date | None:
    """Daily and Fibonacci bars are filtered by New York date."""
    if isinstance(w, dt.datetime):
        return w.astimezone(NEW_YORK).date() if w.tzinfo else w.date()
    return w


def _order(w: dt.date | dt.datetime) -> dt.datetime:
    if isinstance(w, dt.datetime):
        return w if w.tzinfo else w.replace(tzinfo=dt.UTC)
    return dt.datetime(w.year, w.month, w.day, tzinfo=NEW_YORK)


def _intraday(
    res: Resources,
    symbol: str,
    interval: str,
    start: dt.date | dt.datetime | None,
    end: dt.date | dt.datetime | None,
    limit: int | None,
) -> BarsResponse:
    """Minute and 5m..4h bars (as traded), from the lake, recent sessions merged on read."""
    rows = intraday.read_bars(res.lake(), symbol, interval, start, end, limit)
    if not rows and not _known(res, symbol):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no data for symbol {symbol}")
    info = adjusted_bars.describe("none", adjusted_bars.load_actions(res, symbol), None, None)
    info["warnings"] = [*info["warnings"], "intraday bars are served as traded (not adjusted)"]
    model = intraday.MinuteBarOut if interval == "1m" else intraday.IntradayBar
    return BarsResponse(
        symbol=symbol,
        interval=interval,
        adjusted="none",
        adjustment=Adjustment.model_validate(info),
        bars=[model.model_validate(r) for r in rows],
    )


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
    interval: Annotated[
        Interval, Query(description="1d, a Fibonacci length, or intraday 1m..4h")
    ] = "1d",
    start: Annotated[
        dt.date | dt.datetime | None,
        Query(description="first date (YYYY-MM-DD), or an RFC 3339 time for intraday bars"),
    ] = None,
    end: Annotated[
        dt.date | dt.datetime | None,
        Query(description="last date (YYYY-MM-DD), or an RFC 3339 time for intraday bars"),
    ] = None,
    limit: Annotated[
        int | None, Query(ge=1, le=MAX_LIMIT, description="only the most recent N bars")
    ] = None,
    adjusted: Annotated[
        Adjusted,
        Query(
            description="split (default): prices x S(d), volume / S(d); total: prices x T(d) "
            "(splits and cash dividends), volume / S(d); none: as stored (raw)"
        ),
    ] = "split",
) -> BarsResponse:
    """Bars ascending by date; Fibonacci bars are filtered on ``start_date``."""
    if start is not None and end is not None and _order(end) < _order(start):
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, detail=f"end {end} is before start {start}"
        )
    if interval in intraday.INTERVALS:
        return _intraday(res, symbol, interval, start, end, limit)
    start, end = _date(start), _date(end)
    if interval == "1d":
        rows, source = _daily(res, symbol, start, end, limit)
        whole = start is None and end is None and limit is None
        info = adjusted_bars.adjust_daily(res, symbol, rows, source, adjusted, whole=whole)
        out: list[DailyBar] | list[FibBar] = [DailyBar.model_validate(r) for r in rows]
    else:
        n = int(interval.removesuffix("d"))
        actions = adjusted_bars.load_actions(res, symbol)
        factors = None
        if adjusted == "split":
            rows = fibonacci.read_bars(res.lake(), symbol, n, start, end, limit)
        else:
            rows, factors = adjusted_bars.fib_from_rows(
                res, symbol, n, adjusted, actions, start, end, limit
            )
        first = rows[0]["start_date"] if rows else None
        info = adjusted_bars.describe(adjusted, actions, first, factors)
        if adjusted == "split":
            info["warnings"] += adjusted_bars.stale_silver(res.lake(), symbol, actions)
        out = [FibBar.model_validate(r) for r in rows]
    if not rows and not _known(res, symbol):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no data for symbol {symbol}")
    return BarsResponse(
        symbol=symbol,
        interval=interval,
        adjusted=adjusted,
        adjustment=Adjustment.model_validate(info),
        bars=out,
    )
