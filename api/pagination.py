"""Cursor pagination: pages of ``page_size`` rows, a cursor, and the ``next`` link.

A cursor is the sort key of the last row sent (a date for one symbol's bars, a symbol for
lists), so a page is "the rows after this key": stable while rows are added at the end, and
cheap, since every source can seek by its sort key. It is plain rather than opaque so that its
schema can say exactly what is valid (a date, a ticker) and anything else is refused, not
misread. The ``next`` link is the request itself with the new cursor: a relative reference
(path and query), right behind any proxy, in the JSON body and, for every format, in a
``Link: <...>; rel="next"`` header.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Annotated, Final
from urllib.parse import urlencode

import pyarrow as pa
import pyarrow.compute as pc
from fastapi import Depends, Query
from starlette.requests import Request

from api.params import Instant, IsoDate

MAX_PAGE_SIZE: Final = 50_000


@dataclass(frozen=True)
class PageRequest:
    """What the caller asked of paging: the page size and where to continue."""

    size: int
    after: str | None


PageSize = Annotated[
    int | None,
    Query(ge=1, le=MAX_PAGE_SIZE, description="rows per page (default API_PAGE_SIZE)"),
]


def _size(request: Request, page_size: int | None) -> int:
    default = int(request.app.state.resources.settings.api_page_size)
    return page_size or min(default, MAX_PAGE_SIZE)


async def by_date(
    request: Request,
    page_size: PageSize = None,
    cursor: Annotated[
        IsoDate | Instant | None,
        Query(
            description="continue after this date (or, for intraday bars, this RFC 3339 time):"
            " the cursor of the previous next link"
        ),
    ] = None,
) -> PageRequest:
    """Paging of rows sorted by date (or by time)."""
    return PageRequest(_size(request, page_size), None if cursor is None else cursor.isoformat())


async def by_symbol(
    request: Request,
    page_size: PageSize = None,
    cursor: Annotated[
        str | None,
        Query(
            pattern=r"^[A-Za-z0-9.\-/:]{1,32}$",
            description="continue after this symbol: the cursor of the previous next link",
        ),
    ] = None,
) -> PageRequest:
    """Paging of rows sorted by symbol (compared as text: any ticker the source holds)."""
    return PageRequest(_size(request, page_size), cursor)


DatePaging = Annotated[PageRequest, Depends(by_date)]
SymbolPaging = Annotated[PageRequest, Depends(by_symbol)]


def next_link(request: Request, after: str) -> str:
    """The request's path and query with the cursor set to continue after ``after``."""
    items = [(k, v) for k, v in request.query_params.multi_items() if k != "cursor"]
    items.append(("cursor", after))
    return f"{request.url.path}?{urlencode(items)}"


def _key_scalar(text: str, typ: pa.DataType) -> pa.Scalar:
    """A cursor's key as a scalar of the sort column's type.

    A date cursor on a time column means that day's start in UTC; a time cursor on a date
    column, its day.
    """
    if pa.types.is_timestamp(typ):
        when = dt.datetime.fromisoformat(text)
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        return pa.scalar(when, typ)
    if pa.types.is_date(typ):
        return pa.scalar(dt.date.fromisoformat(text[:10]), typ)
    return pa.scalar(text, typ)


def cut(table: pa.Table, key: str, page: PageRequest) -> tuple[pa.Table, str | None]:
    """The page of ``table`` (sorted by ``key``) after the cursor, and the key to go on from.

    The key is None on the last page.
    """
    if page.after is not None and table.num_rows:
        table = table.filter(
            pc.greater(table[key], _key_scalar(page.after, table.schema.field(key).type))
        )
    if table.num_rows <= page.size:
        return table, None
    table = table.slice(0, page.size)
    last = table[key][-1].as_py()
    return table, str(last.isoformat() if hasattr(last, "isoformat") else last)


def link_header(url: str | None) -> dict[str, str]:
    """``Link: <url>; rel="next"`` when there is a next page."""
    return {"Link": f'<{url}>; rel="next"'} if url else {}
