"""Dependencies shared by the routes, as ``Annotated`` aliases."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Query, Security, status
from fastapi.security import APIKeyHeader
from starlette.requests import HTTPConnection

from api.auth import key_matches, owner_id
from api.models import DailyInterval
from api.resources import Resources
from core.layout import LayoutError, normalise_symbol

API_KEY_HEADER = "X-API-Key"


def get_resources(conn: HTTPConnection) -> Resources:
    """The app's resources (built by ``create_app``), for HTTP and WebSocket routes."""
    res: Resources = conn.app.state.resources
    return res


Res = Annotated[Resources, Depends(get_resources)]


_api_key_header = APIKeyHeader(
    name=API_KEY_HEADER, auto_error=False, description="One of the keys in API_KEYS"
)


def require_api_key(
    res: Res, x_api_key: Annotated[str | None, Security(_api_key_header)] = None
) -> None:
    """401 unless ``X-API-Key`` holds an accepted key."""
    if not key_matches(x_api_key, res.settings.keys()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail=f"missing or invalid API key (send it in {API_KEY_HEADER})",
            headers={"WWW-Authenticate": API_KEY_HEADER},
        )


def current_owner(
    res: Res, x_api_key: Annotated[str | None, Security(_api_key_header)] = None
) -> str:
    """The caller's owner id (401 without an accepted key): rules and events are per owner."""
    require_api_key(res, x_api_key)
    assert x_api_key is not None
    return owner_id(x_api_key)


Owner = Annotated[str, Depends(current_owner)]


def valid_symbol(symbol: Annotated[str, Path(description="Ticker, e.g. AAPL")]) -> str:
    """The path's symbol, upper-cased; 400 when it cannot be a ticker."""
    try:
        return normalise_symbol(symbol)
    except LayoutError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail=str(exc)) from exc


Symbol = Annotated[str, Depends(valid_symbol)]


MAX_LIMIT = 100_000
IntervalParam = Annotated[DailyInterval, Query(description="1d, or a Fibonacci length")]
StartParam = Annotated[dt.date | None, Query(description="first date (YYYY-MM-DD)")]
EndParam = Annotated[dt.date | None, Query(description="last date (YYYY-MM-DD)")]
LimitParam = Annotated[
    int | None, Query(ge=1, le=MAX_LIMIT, description="only the most recent N rows")
]
"""Query parameters every history route takes, spelled once."""
