"""Cursor pagination: opaque cursors, pages of ``page_size`` rows, and the ``next`` link.

A cursor holds the sort key of the last row sent (a date for bars, a symbol for lists), so a
page is "the rows after this key": stable while rows are added at the end, and cheap, since
every source can seek by its sort key. The ``next`` link is the request itself with the new
cursor: a relative reference (path and query), so it is right behind any proxy. It is in the
JSON body and, for every format, in a ``Link: <...>; rel="next"`` header.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Annotated, Final
from urllib.parse import urlencode

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from fastapi import Depends, Query
from starlette.requests import Request

from api.problems import Problem

MAX_PAGE_SIZE: Final = 50_000
_VERSION: Final = 1


def encode_cursor(after: str) -> str:
    """An opaque cursor for "rows whose key is greater than ``after``"."""
    raw = orjson.dumps({"v": _VERSION, "a": after})
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> str:
    """The key a cursor continues after; 400 when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        doc = orjson.loads(raw)
        if isinstance(doc, dict) and doc.get("v") == _VERSION and isinstance(doc.get("a"), str):
            return str(doc["a"])
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        pass
    raise Problem(400, "cursor: not a cursor this API gave (use the next link as is)",
                  kind="invalid-parameter")  # fmt: skip


@dataclass(frozen=True)
class PageRequest:
    """What the caller asked of paging: the page size and where to continue."""

    size: int
    after: str | None


def page_request(
    request: Request,
    page_size: Annotated[
        int | None,
        Query(ge=1, le=MAX_PAGE_SIZE, description="rows per page (default API_PAGE_SIZE)"),
    ] = None,
    cursor: Annotated[
        str | None,
        Query(
            max_length=512,
            pattern=r"^[A-Za-z0-9_\-]+$",
            description="where to continue: the cursor of the previous page's next link",
        ),
    ] = None,
) -> PageRequest:
    """The paging parameters, as a dependency any listing route can take."""
    default = int(request.app.state.resources.settings.api_page_size)
    return PageRequest(
        size=page_size or min(default, MAX_PAGE_SIZE),
        after=None if cursor is None else decode_cursor(cursor),
    )


Paging = Annotated[PageRequest, Depends(page_request)]


def next_link(request: Request, after: str) -> str:
    """The request's path and query with the cursor set to continue after ``after``."""
    items = [(k, v) for k, v in request.query_params.multi_items() if k != "cursor"]
    items.append(("cursor", encode_cursor(after)))
    return f"{request.url.path}?{urlencode(items)}"


def cut(table: pa.Table, key: str, page: PageRequest) -> tuple[pa.Table, str | None]:
    """The page of ``table`` (sorted by ``key``) after the cursor, and the key to go on from.

    The key is None on the last page.
    """
    if page.after is not None and table.num_rows:
        try:
            after = pa.scalar(page.after).cast(table.schema.field(key).type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise Problem(400, "cursor: not a cursor of this request",
                          kind="invalid-parameter") from None  # fmt: skip
        table = table.filter(pc.greater(table[key], after))
    if table.num_rows <= page.size:
        return table, None
    table = table.slice(0, page.size)
    last = table[key][-1].as_py()
    return table, str(last.isoformat() if hasattr(last, "isoformat") else last)


def link_header(url: str | None) -> dict[str, str]:
    """``Link: <url>; rel="next"`` when there is a next page."""
    return {"Link": f'<{url}>; rel="next"'} if url else {}
