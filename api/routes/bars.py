"""``GET /v1/bars/{symbol}`` (one symbol's history) and ``GET /v1/bars`` (one date, many symbols).

Daily bars merge Postgres and the lake (:mod:`api.daily`); Fibonacci bars come from silver
(:mod:`api.fibonacci`); intraday bars from the minute lake (:mod:`api.intraday`). All page by
cursor, render in every format, and carry ETag and Cache-Control; answers come from the
response cache when an identical request was just served.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Final

import pyarrow as pa
from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from api import adjusted as adjusted_bars
from api import crosssection, daily, fibonacci, intraday
from api.deps import MAX_LIMIT, Fmt, Res, Symbol
from api.formats import Format, openapi_content
from api.models import Adjusted, BarsResponse, CrossSectionResponse, DailyInterval, Interval
from api.pagination import DatePaging, PageRequest, SymbolPaging, cut, link_header, next_link
from api.params import Instant, IsoDate, SymbolsQuery, parse_symbols
from api.problems import Problem, problems
from api.resources import Resources, tag_of
from api.responses import CachePolicy, cached, render
from core import adjustments as adj
from core import layout
from core.calendar import NEW_YORK

router = APIRouter(prefix="/v1", tags=["bars"])
SETTLED_DAYS: Final = 7
"""Daily history this many days old or more is treated as final."""
FIB_SETTLED_DAYS: Final = 60
"""A Fibonacci bar starting this long ago is complete (34 sessions are under 50 days)."""

When = dt.date | dt.datetime
INTRADAY_WARNING: Final = "intraday bars are served as traded (not adjusted)"


def _date(w: When | None) -> dt.date | None:
    """Daily and Fibonacci bars are filtered by New York date."""
    if isinstance(w, dt.datetime):
        return w.astimezone(NEW_YORK).date()
    return w


def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def _tag_keys(interval: str) -> list[str]:
    keys = [layout.reference_splits(), layout.reference_dividends()]
    if interval.endswith("d") and interval != "1d":
        keys.append(layout.silver_checkpoint(int(interval.removesuffix("d"))))
    return keys


async def current_tag(res: Resources, interval: str) -> str | None:
    """:func:`data_tag`, without leaving the event loop while the states are known."""
    known, tag = res.known_tag(_tag_keys(interval))
    return tag if known else await run_in_threadpool(data_tag, res, interval)


def data_tag(res: Resources, interval: str) -> str | None:
    """The state of the lake files an answer depends on beyond its own rows.

    Those are the interval's silver (its checkpoint) and the corporate actions that adjust
    prices; None when none of them exists.
    """
    return tag_of([res.generation(k) for k in _tag_keys(interval)])


def policy(
    res: Resources, end: dt.date | None, interval: str, table: pa.Table, tag: str | None
) -> CachePolicy:
    """History that ended long enough ago is cacheable for an hour; the rest revalidates.

    Fibonacci answers read from silver in a known state (``tag``) are kept here until it
    changes.
    """
    s = res.settings
    settled = SETTLED_DAYS if interval == "1d" else FIB_SETTLED_DAYS
    closed = end is not None and end <= _today() - dt.timedelta(days=settled)
    if closed and "complete" in table.column_names and table.num_rows:
        closed = bool(table["complete"].to_pylist()[-1])
    if closed and s.api_history_max_age_s > 0:
        return CachePolicy.history(s.api_history_max_age_s)
    fresh = CachePolicy.fresh(s.api_fresh_cache_s)
    silver = interval.endswith("d") and interval != "1d" and tag is not None
    return CachePolicy(fresh.cache_control, s.api_history_max_age_s) if silver else fresh


def _daily(
    res: Resources, symbol: str, start: dt.date | None, end: dt.date | None, limit: int | None
) -> pa.Table:
    parts = {"lake": daily.read_lake(res.lake(), symbol, start, end, limit)}
    if daily.postgres_may_hold(end, _today(), res.settings.cache_window_days):
        with res.postgres() as conn:
            parts["postgres"] = daily.read_postgres(conn, symbol, start, end, limit)
    merged = daily.merge_sources(parts)
    if limit is not None and merged.num_rows > limit:
        merged = merged.slice(merged.num_rows - limit)
    return merged


def _send(
    request: Request,
    res: Resources,
    fmt: Format,
    rows: pa.Table,
    after: str | None,
    envelope: dict[str, object],
    end: dt.date | None,
    interval: str,
    tag: str | None,
) -> Response:
    """A page of bars with its ``served_by``, next link and caching policy."""
    served = daily.served_by(rows)
    nxt = next_link(request, after) if after else None
    drop = [c for c in ("origin", "ingested_at") if c in rows.column_names]
    return render(
        request,
        fmt,
        rows.drop_columns(drop),
        {**envelope, "served_by": served, "next": nxt},
        rows_key="bars",
        policy=policy(res, end, interval, rows, tag),
        cache=res.responses,
        headers={**link_header(nxt), "X-Served-By": ", ".join(sorted(served)) or "none"},
        tag=tag,
        tag_keys=_tag_keys(interval),
    )


def _known(res: Resources, symbol: str) -> bool:
    if daily.symbol_in_lake(res.lake(), symbol):
        return True
    with res.postgres() as conn:
        return daily.symbol_in_postgres(conn, symbol)


def _adjust_daily(
    res: Resources, symbol: str, rows: pa.Table, mode: Adjusted, whole: bool
) -> tuple[pa.Table, dict[str, Any]]:
    """A page of daily rows adjusted as ``mode`` asks, and the response's ``adjustment``."""
    served = daily.served_by(rows)
    source = "postgres" if "postgres" in served else "lake"
    return adjusted_bars.adjust_daily(res, symbol, rows, source, mode, whole=whole)


def _fibonacci(
    res: Resources,
    symbol: str,
    n: int,
    mode: Adjusted,
    start: dt.date | None,
    end: dt.date | None,
    limit: int | None,
) -> tuple[pa.Table, adj.Actions | None, adj.Factors | None]:
    """Fibonacci bars: silver (``split``, as built) or built on read (``none``, ``total``)."""
    actions = adjusted_bars.load_actions(res, symbol)
    if mode == "split":
        with res.duck() as con:
            table = fibonacci.read_bars(con, res.lake(), symbol, n, start, end, limit)
        return table, actions, None
    records, factors = adjusted_bars.fib_from_rows(res, symbol, n, mode, actions, start, end, limit)
    return pa.Table.from_pylist(records, schema=fibonacci.EMPTY), actions, factors


def _intraday(
    res: Resources,
    symbol: str,
    interval: str,
    start: When | None,
    end: When | None,
    limit: int | None,
) -> tuple[pa.Table, dict[str, Any]]:
    """Minute and 5m..4h bars (as traded) from the lake, and the ``adjustment`` that says so."""
    table = intraday.read_table(res.lake(), symbol, interval, start, end, limit)
    if table.num_rows == 0 and not _known(res, symbol):
        raise Problem(404, f"no data for symbol {symbol}", kind="unknown-symbol")
    info = adjusted_bars.describe("none", adjusted_bars.load_actions(res, symbol), None, None)
    info["warnings"] = [*info["warnings"], INTRADAY_WARNING]
    return table.append_column("origin", pa.array(["lake"] * table.num_rows, pa.string())), info


def _history(
    request: Request,
    res: Resources,
    fmt: Format,
    page: PageRequest,
    symbol: str,
    interval: str,
    mode: Adjusted,
    start: When | None,
    end: When | None,
    limit: int | None,
    tag: str | None,
) -> Response:
    if interval in intraday.INTERVALS:
        table, info = _intraday(res, symbol, interval, start, end, limit)
        rows, after = cut(table, "start", page)
        as_traded: dict[str, object] = {
            "symbol": symbol, "interval": interval, "adjusted": "none", "adjustment": info,
        }  # fmt: skip
        return _send(request, res, fmt, rows, after, as_traded, _date(end), interval, tag)
    start, end = _date(start), _date(end)
    if interval == "1d":
        table, key = _daily(res, symbol, start, end, limit), "date"
    else:
        n = int(interval.removesuffix("d"))
        table, actions, factors = _fibonacci(res, symbol, n, mode, start, end, limit)
        table = table.append_column("origin", pa.array(["lake"] * table.num_rows, pa.string()))
        key = "start_date"
    if table.num_rows == 0 and not _known(res, symbol):
        raise Problem(404, f"no data for symbol {symbol}", kind="unknown-symbol")
    rows, after = cut(table, key, page)
    if interval == "1d":
        whole = start is None and end is None and limit is None and page.after is None
        rows, info = _adjust_daily(res, symbol, rows, mode, whole)
    else:
        first = rows["start_date"][0].as_py() if rows.num_rows else None
        info = adjusted_bars.describe(mode, actions, first, factors)
        if mode == "split":
            info["warnings"] += adjusted_bars.stale_silver(res.lake(), symbol, actions)
    envelope: dict[str, object] = {
        "symbol": symbol, "interval": interval, "adjusted": mode, "adjustment": info,
    }  # fmt: skip
    return _send(request, res, fmt, rows, after, envelope, end, interval, tag)


@router.get(
    "/bars/{symbol}",
    response_model=BarsResponse,
    responses={
        200: {"content": openapi_content("#/components/schemas/BarsResponse")},
        304: {"description": "not modified (If-None-Match matched the ETag)"},
        **problems(404, 406, 503, c404="no data for this symbol"),
    },
)
async def bars(
    request: Request,
    res: Res,
    symbol: Symbol,
    fmt: Fmt,
    page: DatePaging,
    interval: Annotated[
        Interval, Query(description="1d, a Fibonacci length, or intraday 1m..4h")
    ] = "1d",
    start: Annotated[
        IsoDate | Instant | None,
        Query(description="first date (YYYY-MM-DD), or an RFC 3339 time for intraday bars"),
    ] = None,
    end: Annotated[
        IsoDate | Instant | None,
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
) -> Response:
    """Bars ascending by date, a page at a time; Fibonacci bars are filtered on ``start_date``.

    Daily bars merge Postgres and the lake (``served_by`` counts the rows each served).
    Intraday bars (1m..4h) are served as traded; their ``start``/``end`` may be RFC 3339 times,
    dates select whole sessions.
    ``limit`` keeps the most recent N bars of the range; ``page_size`` and the ``next`` link
    page through them. An empty range (``end`` before ``start``) has no bars.
    """
    tag = await current_tag(res, interval)
    if (hit := await cached(request, res, fmt, tag, _tag_keys(interval))) is not None:
        return hit
    return await run_in_threadpool(
        _history, request, res, fmt, page, symbol, interval, adjusted, start, end, limit, tag
    )


def _section(
    request: Request,
    res: Resources,
    fmt: Format,
    page: PageRequest,
    interval: str,
    day: dt.date,
    symbols: list[str] | None,
    tag: str | None,
) -> Response:
    lake = res.lake()
    if interval == "1d":
        parts = {}
        with res.duck() as con:
            parts["lake"] = crosssection.lake_rows(con, lake, day, symbols)
        if daily.postgres_may_hold(day, _today(), res.settings.cache_window_days):
            with res.postgres() as conn:
                parts["postgres"] = crosssection.postgres_rows(conn, day, symbols)
        every = adjusted_bars.load_all_splits(res)
        table = crosssection.split_adjust(crosssection.merge_by_symbol(parts), day, every)
    else:
        with res.duck() as con:
            table = crosssection.fib_rows(con, lake, int(interval.removesuffix("d")), day, symbols)
        table = table.append_column("origin", pa.array(["lake"] * table.num_rows))
    rows, after = cut(table, "symbol", page)
    envelope: dict[str, object] = {
        "interval": interval, "date": day.isoformat(), "adjusted": "split",
    }  # fmt: skip
    return _send(request, res, fmt, rows, after, envelope, day, interval, tag)


@router.get(
    "/bars",
    response_model=CrossSectionResponse,
    responses={
        200: {"content": openapi_content("#/components/schemas/CrossSectionResponse")},
        304: {"description": "not modified (If-None-Match matched the ETag)"},
        **problems(406, 503),
    },
)
async def cross_section(
    request: Request,
    res: Res,
    fmt: Fmt,
    page: SymbolPaging,
    date: Annotated[IsoDate, Query(description="the date (YYYY-MM-DD)")],
    interval: Annotated[DailyInterval, Query(description="1d, or a Fibonacci length")] = "1d",
    symbols: SymbolsQuery | None = None,
) -> Response:
    """Every symbol's bar on one date (or of ``symbols``), by symbol, a page at a time.

    Split-adjusted, as silver and gold are. For a Fibonacci interval, the bar whose span holds
    the date. Symbols without a bar that day are simply absent.
    """
    wanted = None if symbols is None else parse_symbols(symbols)
    tag = await current_tag(res, interval)
    if (hit := await cached(request, res, fmt, tag, _tag_keys(interval))) is not None:
        return hit
    return await run_in_threadpool(_section, request, res, fmt, page, interval, date, wanted, tag)
