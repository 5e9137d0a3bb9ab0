"""``GET /chart/{symbol}``: a candlestick and volume chart of any interval, updated live.

The page and its script are ours (``api/web/``); the charting library is lightweight-charts,
installed from npm at build time (``make web``: ``npm ci`` in ``api/web``) and served from its
package folder, never committed. The page needs no key to load; it asks the API for bars and
opens the WebSocket with the key given in the URL fragment (``#key=...``, which browsers never
send to a server), remembered for the tab.
"""

from __future__ import annotations

import html
from functools import cache
from pathlib import Path
from typing import Annotated, Final

from fastapi import APIRouter, Query
from starlette.responses import Response

from api.models import Interval
from api.params import Symbol
from api.problems import Problem

router = APIRouter(tags=["chart"], include_in_schema=False)
WEB: Final = Path(__file__).resolve().parent.parent / "web"
LIBRARY: Final = (
    WEB / "node_modules/lightweight-charts/dist/lightweight-charts.standalone.production.js"
)
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; "
    "connect-src 'self' ws: wss:; img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'"
)


@cache
def _asset(path: Path) -> bytes:
    return path.read_bytes()


def asset(path: Path) -> bytes:
    """A file of the page; 503 when the library was not installed (``make web``)."""
    try:
        return _asset(path)
    except FileNotFoundError:
        raise Problem(
            503,
            "the chart's library is not installed: run `make web` (npm ci in api/web)",
            kind="chart-not-built",
        ) from None


@router.get("/chart/{symbol}")
def chart(
    symbol: Symbol,
    interval: Annotated[Interval, Query(description="1d, or a Fibonacci length")] = "1d",
) -> Response:
    """The chart page of ``symbol``."""
    asset(LIBRARY)  # refuse a page that could not draw
    page = _asset(WEB / "chart.html").decode()
    body = page.replace("{symbol}", html.escape(symbol)).replace("{interval}", interval)
    headers = {"Content-Security-Policy": CSP, "Cache-Control": "no-cache"}
    return Response(body, media_type="text/html; charset=utf-8", headers=headers)


@router.get("/chart/assets/{name}")
def chart_asset(name: str) -> Response:
    """The page's script and the charting library."""
    files = {"chart.js": WEB / "chart.js", "lightweight-charts.js": LIBRARY}
    if name not in files:
        raise Problem(404, "no such asset", kind="not-found")
    return Response(
        asset(files[name]),
        media_type="text/javascript; charset=utf-8",
        headers={"Cache-Control": "public, max-age=3600"},
    )
