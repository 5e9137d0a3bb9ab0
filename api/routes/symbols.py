"""``GET /v1/symbols`` (filtered, searched, paged) and ``GET /v1/symbols/{symbol}``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from api import adjusted as adjusted_bars
from api import symbols as data
from api.deps import Fmt, Res, Symbol
from api.formats import Format, openapi_content
from api.models import SymbolDetail, SymbolsResponse
from api.pagination import PageRequest, SymbolPaging, link_header, next_link
from api.problems import Problem, problems
from api.resources import Resources
from api.responses import CachePolicy, cached, render

router = APIRouter(prefix="/v1", tags=["symbols"])
CODE = r"^[A-Za-z0-9._\-]+$"
LIST_TTL_S = 60.0
"""Reference data changes once a day: a listing is reused for a minute."""


def _list(
    request: Request, res: Resources, fmt: Format, page: PageRequest, filters: data.Filters
) -> Response:
    with res.postgres() as conn:
        table = data.list_symbols(conn, filters, page.after, page.size + 1)
    nxt = None
    if table.num_rows > page.size:
        table = table.slice(0, page.size)
        nxt = next_link(request, table["symbol"][-1].as_py())
    return render(
        request,
        fmt,
        table,
        {"next": nxt},
        rows_key="symbols",
        policy=CachePolicy(f"private, max-age={int(LIST_TTL_S)}", LIST_TTL_S),
        cache=res.responses,
        headers=link_header(nxt),
    )


@router.get(
    "/symbols",
    response_model=SymbolsResponse,
    responses={
        200: {
            "description": "one page of tickers",
            "content": openapi_content("#/components/schemas/SymbolsResponse"),
        },
        304: {"description": "not modified (If-None-Match matched the ETag)"},
        **problems(406, 503),
    },
)
async def list_symbols(
    request: Request,
    res: Res,
    fmt: Fmt,
    page: SymbolPaging,
    active: Annotated[bool | None, Query(description="only active (or inactive) tickers")] = None,
    type: Annotated[
        str | None, Query(pattern=CODE, max_length=16, description="e.g. CS, ETF, ADRC")
    ] = None,
    exchange: Annotated[
        str | None, Query(pattern=CODE, max_length=16, description="MIC, e.g. XNAS, XNYS")
    ] = None,
    q: Annotated[
        str | None,
        Query(
            pattern=r"^[^\x00-\x1f\x7f]+$",
            max_length=64,
            description="ticker prefix or part of the name (case-insensitive)",
        ),
    ] = None,
) -> Response:
    """Tickers by symbol, a page at a time (reference data from the vendor's tickers list)."""
    if (hit := await cached(request, res, fmt)) is not None:
        return hit
    filters = data.Filters(active=active, type=type, exchange=exchange, q=q)
    return await run_in_threadpool(_list, request, res, fmt, page, filters)


def _detail(res: Resources, symbol: str) -> dict[str, Any]:
    lake = res.lake()
    with res.postgres() as conn:
        meta = data.metadata(conn, symbol)
        pg_span = data.postgres_span(conn, symbol)
    spans = [s for s in (data.lake_span(lake, symbol), pg_span) if s is not None]
    if meta is None and not spans:
        raise Problem(404, f"unknown symbol {symbol}", kind="unknown-symbol")
    out: dict[str, Any] = {"symbol": symbol, **(meta or {})}
    out["first_date"] = min(s[0] for s in spans) if spans else None
    out["last_date"] = max(s[1] for s in spans) if spans else None
    actions = adjusted_bars.load_actions(res, symbol)
    out["splits"] = [
        {"execution_date": x.execution_date, "split_from": x.split_from, "split_to": x.split_to,
         "adjustment_type": x.adjustment_type}
        for x in (actions.splits if actions is not None else ())
    ]  # fmt: skip
    return out


@router.get(
    "/symbols/{symbol}",
    response_model=SymbolDetail,
    responses=problems(404, 503, c404="unknown symbol"),
)
async def symbol_detail(res: Res, symbol: Symbol) -> SymbolDetail:
    """A ticker's reference data, the first and last date of its daily bars, and its splits."""
    return SymbolDetail.model_validate(await run_in_threadpool(_detail, res, symbol))
