"""``GET /v1/indicators/{symbol}`` and ``GET /v1/indicators``: gold, as JSON or Parquet.

The same conventions as ``/v1/bars``: ``interval``, ``start``, ``end`` (on ``date`` or
``start_date``) and ``limit`` (the most recent N rows); 400 for a bad value, 404 for a symbol
with no data at all, 401 without a key, 503 when the lake cannot be read. ``format=parquet`` (or
``Accept: application/vnd.apache.parquet``) returns the rows as a Parquet file, typed as in the
lake, for a dataframe to load as is.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from fastapi import APIRouter, Header, HTTPException, Query, Response, status

from api import daily, indicators
from api.deps import EndParam, IntervalParam, LimitParam, Res, StartParam, Symbol
from api.models import ErrorResponse, IndicatorsResponse
from api.params import IsoDate

router = APIRouter(prefix="/v1", tags=["indicators"])
PARQUET = "application/vnd.apache.parquet"
Format = Literal["json", "parquet"]
_PARQUET_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {PARQUET: {}}, "description": "JSON, or Parquet when asked for"}
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "bad symbol, interval, date or limit"},
    401: {"model": ErrorResponse, "description": "missing or invalid API key"},
}


def _wants_parquet(fmt: Format | None, accept: str | None) -> bool:
    if fmt is not None:
        return fmt == "parquet"
    return accept is not None and PARQUET in accept


def _parquet(table: pa.Table) -> Response:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return Response(sink.getvalue().to_pybytes(), media_type=PARQUET)


def _rows(table: pa.Table) -> list[dict[str, Any]]:
    return list(table.to_pylist())


@router.get(
    "/indicators/{symbol}",
    response_model=IndicatorsResponse,
    responses={
        **_PARQUET_RESPONSE,
        **_ERRORS,
        404: {"model": ErrorResponse, "description": "no data for this symbol"},
    },
)
def symbol_indicators(
    res: Res,
    symbol: Symbol,
    interval: IntervalParam = "1d",
    start: StartParam = None,
    end: EndParam = None,
    limit: LimitParam = None,
    format: Annotated[Format | None, Query(description="json (default) or parquet")] = None,
    accept: Annotated[str | None, Header()] = None,
) -> Any:
    """Indicators of one symbol ascending by date; Fibonacci rows are filtered on start_date.

    An empty range (``end`` before ``start``) has no rows.
    """
    lake = res.lake()
    table = indicators.read_symbol(lake, symbol, interval, start, end, limit)
    if table.num_rows == 0 and not daily.symbol_in_lake(lake, symbol):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no data for symbol {symbol}")
    if _wants_parquet(format, accept):
        return _parquet(table)
    return IndicatorsResponse(symbol=symbol, interval=interval, rows=_rows(table))


@router.get(
    "/indicators",
    response_model=IndicatorsResponse,
    responses={**_PARQUET_RESPONSE, **_ERRORS},
)
def cross_section(
    res: Res,
    date: Annotated[IsoDate, Query(description="the date (YYYY-MM-DD)")],
    interval: IntervalParam = "1d",
    format: Annotated[Format | None, Query(description="json (default) or parquet")] = None,
    accept: Annotated[str | None, Header()] = None,
) -> Any:
    """Every symbol's row for one date: its daily bar, or the Fibonacci bar covering it."""
    table = indicators.read_date(res.lake(), interval, date)
    if _wants_parquet(format, accept):
        return _parquet(table)
    return IndicatorsResponse(interval=interval, date=date, rows=_rows(table))
