"""Polygon REST semantics over the market model: pure request-to-reply functions, no HTTP.

Status codes, envelopes, defaults and pagination follow Polygon: grouped daily on a non-session
returns ``resultsCount`` 0 and no ``results``; range aggregates default to 5,000 base rows
(50,000 at most) and hand back an absolute ``next_url`` while rows remain; reference endpoints
page with an opaque ``cursor``. The server adds auth, faults and statistics around these.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar
from urllib.parse import parse_qsl, urlencode

import numpy as np

from core.calendar import NEW_YORK as _NY
from dataflows.simulator import encode
from dataflows.simulator.actions import CorporateActions, dividend_row, edited
from dataflows.simulator.bars import Bars, concat, empty
from dataflows.simulator.intraday import SIM_RULES
from dataflows.simulator.lru import Lru
from dataflows.simulator.market import Market, Split, ny_midnight_ms
from dataflows.simulator.universe import Listing

Query = Mapping[str, str]
T = TypeVar("T")
DEFAULT_LIMIT: Final = 5000
MAX_LIMIT: Final = 50_000
TIMESPANS: Final = ("minute", "hour", "day", "week", "month", "quarter", "year")
_DAY_MS: Final = 86_400_000


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer: status, JSON body bytes, extra headers."""

    status: int
    body: bytes
    headers: Mapping[str, str] | None = None


class BadRequest(ValueError):
    """A parameter Polygon would reject with 400."""


def request_id() -> str:
    """A fresh Polygon-style request id."""
    return uuid.uuid4().hex


def error(status: int, message: str) -> Reply:
    """Polygon's error envelope (``error`` for 4xx/5xx, ``message`` for 404)."""
    key = "message" if status == 404 else "error"
    kind = "NOT_FOUND" if status == 404 else "ERROR"
    return Reply(status, encode.dumps({"status": kind, "request_id": request_id(), key: message}))


def _ok(obj: dict[str, Any]) -> Reply:
    obj["request_id"] = request_id()
    return Reply(200, encode.dumps(obj))


def parse_bool(value: str | None, default: bool) -> bool:
    """Polygon's boolean query values."""
    if value is None or value == "":
        return default
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0"):
        return False
    msg = f"invalid boolean {value!r}"
    raise BadRequest(msg)


def parse_date(value: str, name: str) -> dt.date:
    """A YYYY-MM-DD parameter."""
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        msg = f"Could not parse the {name} parameter {value!r}: expected YYYY-MM-DD"
        raise BadRequest(msg) from None


def _limit(q: Query, default: int, maximum: int) -> int:
    raw = q.get("limit")
    if raw in (None, ""):
        return default
    try:
        n = int(raw)
    except ValueError:
        msg = f"invalid limit {raw!r}"
        raise BadRequest(msg) from None
    if n < 1:
        msg = "limit must be positive"
        raise BadRequest(msg)
    return min(n, maximum)


def _cursor_out(params: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(urlencode(params).encode()).decode().rstrip("=")


def _cursor_in(value: str) -> dict[str, str]:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
    except ValueError:
        msg = "invalid cursor"
        raise BadRequest(msg) from None
    return dict(parse_qsl(raw))


def with_cursor(q: Query) -> dict[str, str]:
    """The query with the parameters carried by its ``cursor`` merged in (cursor wins)."""
    merged = {k: v for k, v in q.items() if k not in ("cursor", "apiKey")}
    if q.get("cursor"):
        merged.update(_cursor_in(q["cursor"]))
    return merged


# -- grouped daily --------------------------------------------------------------------------
GroupedKey = tuple[dt.date, bool, tuple[str, ...]]


class GroupedCache(Lru[GroupedKey, tuple[bytes, int]]):
    """Serialised grouped-daily bodies by (date, adjusted, malformations)."""

    def __init__(self, size: int = 64) -> None:
        super().__init__(size)


def grouped_daily(
    market: Market,
    locale: str,
    market_type: str,
    date: str,
    q: Query,
    bad_rows: Mapping[dt.date, tuple[str, ...]],
    cache: GroupedCache,
    *,
    withheld: bool = False,
) -> Reply:
    """GET /v2/aggs/grouped/locale/{locale}/market/{market}/{date}.

    ``withheld`` answers with no results (data not ready yet), whatever the date.
    """
    day = parse_date(date, "date")
    adjusted = parse_bool(q.get("adjusted"), True)
    kinds = bad_rows.get(day, ())
    served = (locale, market_type) == ("us", "stocks") and not withheld
    key_day = day if served else dt.date.min

    def make() -> tuple[bytes, int]:
        bars = market.grouped(day, adjusted, bad_rows={day: kinds}) if key_day == day else empty()
        n = len(bars)
        head = f'{{"queryCount":{n},"resultsCount":{n},"adjusted":{str(adjusted).lower()}'.encode()
        if n:
            head += b',"results":[' + encode.rows(bars, ticker_key=True) + b"]"
        return head, n

    head, n = cache.get_or_make((key_day, adjusted, kinds), make)
    tail = f',"status":"OK","request_id":"{request_id()}","count":{n}}}'.encode()
    return Reply(200, head + tail)


# -- range aggregates -----------------------------------------------------------------------
def _bound(value: str, name: str, end: bool) -> int:
    """A from/to parameter as Unix ms: dates cover the whole New York day."""
    if value.isdigit():
        return int(value)
    day = parse_date(value, name)
    return ny_midnight_ms(day + dt.timedelta(days=1)) - 1 if end else ny_midnight_ms(day)


def _ms_date(ms: int) -> dt.date:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).astimezone(_NY).date()


def _bucket_keys(bars: Bars, multiplier: int, timespan: str) -> np.ndarray[Any, np.dtype[np.int64]]:
    if timespan in ("minute", "hour"):
        width = multiplier * (60_000 if timespan == "minute" else 3_600_000)
        return bars.t // width
    day = bars.day.astype("datetime64[D]")
    if timespan == "day":
        return bars.day.astype(np.int64) // multiplier
    if timespan == "week":
        return (bars.day.astype(np.int64) + 3) // 7 // multiplier
    months = day.astype("datetime64[M]").astype(np.int64)
    if timespan == "month":
        return months // multiplier
    if timespan == "quarter":
        return months // 3 // multiplier
    return months // 12 // multiplier


def _aggregate(bars: Bars, keys: np.ndarray[Any, np.dtype[np.int64]]) -> Bars:
    """Roll consecutive rows with equal keys into one bar each (rows sorted by time)."""
    if not len(bars):
        return bars
    starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
    ends = np.concatenate([starts[1:], [len(bars)]]) - 1
    vol = np.add.reduceat(bars.volume, starts)
    notional = np.add.reduceat(bars.vwap * bars.volume, starts)
    return Bars(
        symbol=bars.symbol[starts],
        day=bars.day[starts],
        t=bars.t[starts],
        open=bars.open[starts],
        high=np.maximum.reduceat(bars.high, starts),
        low=np.minimum.reduceat(bars.low, starts),
        close=bars.close[ends],
        volume=vol,
        vwap=np.round(notional / np.where(vol > 0, vol, 1.0), 4),
        transactions=np.add.reduceat(bars.transactions, starts),
    )


def _base_rows(
    market: Market,
    ticker: str,
    timespan: str,
    lo_ms: int,
    hi_ms: int,
    adjusted: bool,
    desc: bool,
    want: int,
    bad_rows: Mapping[dt.date, tuple[str, ...]],
    inject: bool,
) -> Bars:
    """Base bars (daily or minute) in [lo_ms, hi_ms], at least ``want`` of them if they exist."""
    first, last = _ms_date(lo_ms), _ms_date(hi_ms)
    if last < first:
        return empty()
    if timespan not in ("minute", "hour"):
        bars = market.daily(ticker, first, last, adjusted, inject=inject, bad_rows=bad_rows)
        return bars.take((bars.t >= lo_ms) & (bars.t <= hi_ms))
    sessions = [d for d in market.session_dates() if first <= d <= last]
    if desc:
        sessions.reverse()
    per_chunk = max(2, want // 390 + 2)
    parts: list[Bars] = []
    got = 0
    for c in range(0, len(sessions), per_chunk):
        chunk = sorted(sessions[c : c + per_chunk])
        bars = market.minute(ticker, chunk[0], chunk[-1], adjusted)
        bars = bars.take((bars.t >= lo_ms) & (bars.t <= hi_ms))
        parts.append(bars)
        got += len(bars)
        if got > want:
            break
    if desc:
        parts.reverse()
    return concat(parts)


def range_aggs(
    market: Market,
    base_url: str,
    ticker: str,
    multiplier: str,
    timespan: str,
    from_: str,
    to: str,
    q: Query,
    bad_rows: Mapping[dt.date, tuple[str, ...]],
) -> Reply:
    """GET /v2/aggs/ticker/{ticker}/range/{multiplier}/{timespan}/{from}/{to}."""
    q = with_cursor(q)
    if not multiplier.isdigit() or int(multiplier) < 1:
        msg = f"invalid multiplier {multiplier!r}"
        raise BadRequest(msg)
    mult = int(multiplier)
    if timespan not in TIMESPANS:
        msg = f"invalid timespan {timespan!r}; expected one of {', '.join(TIMESPANS)}"
        raise BadRequest(msg)
    adjusted = parse_bool(q.get("adjusted"), True)
    sort = q.get("sort", "asc") or "asc"
    if sort not in ("asc", "desc"):
        msg = f"invalid sort {sort!r}"
        raise BadRequest(msg)
    limit = _limit(q, DEFAULT_LIMIT, MAX_LIMIT)
    lo_ms, hi_ms = _bound(from_, "from", end=False), _bound(to, "to", end=True)
    desc = sort == "desc"
    inject = timespan == "day" and mult == 1
    base = _base_rows(
        market, ticker, timespan, lo_ms, hi_ms, adjusted, desc, limit, bad_rows, inject
    )
    if desc:
        page = base.take(np.arange(len(base) - 1, max(len(base) - limit, 0) - 1, -1))
    else:
        page = base.take(np.arange(min(limit, len(base))))
    more = len(base) > limit
    page_sorted = page.take(np.argsort(page.t, kind="stable"))
    keys = _bucket_keys(page_sorted, mult, timespan)
    rolled = not (mult == 1 and timespan in ("minute", "day"))
    if more and rolled and len(np.unique(keys)) > 1:
        # a bucket cut by the page boundary is left whole for the next page
        edge = keys[0] if desc else keys[-1]
        page_sorted = page_sorted.take(keys != edge)
        keys = keys[keys != edge]
    results = _aggregate(page_sorted, keys) if rolled else page_sorted
    if desc:
        results = results.take(np.arange(len(results) - 1, -1, -1))
    n = len(results)
    head = f'{{"ticker":{json.dumps(ticker)},"queryCount":{len(page_sorted)},"resultsCount":{n},"adjusted":{str(adjusted).lower()}'
    body = head.encode()
    if n:
        body += b',"results":[' + encode.rows(results, ticker_key=False) + b"]"
    tail: dict[str, Any] = {"status": "OK", "request_id": request_id(), "count": n}
    if more and len(page_sorted):
        cursor = _cursor_out({"adjusted": str(adjusted).lower(), "sort": sort, "limit": limit})
        if desc:
            nxt = f"{from_}/{int(page_sorted.t[0]) - 1}"
        else:
            nxt = f"{int(page_sorted.t[-1]) + 1}/{to}"
        tail["next_url"] = (
            f"{base_url}/v2/aggs/ticker/{ticker}/range/{mult}/{timespan}/{nxt}?cursor={cursor}"
        )
    body += b"," + encode.dumps(tail)[1:]
    return Reply(200, body)


# -- reference data -------------------------------------------------------------------------
_OPS: Final = {
    "": lambda a, b: a == b,
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
}


def _filters(q: Query, name: str) -> list[tuple[Callable[[Any, Any], bool], str]]:
    out = []
    for op, fn in _OPS.items():
        value = q.get(f"{name}.{op}" if op else name)
        if value:
            out.append((fn, value))
    return out


def _page(
    items: Sequence[T],
    row: Callable[[T], dict[str, Any]],
    q: dict[str, str],
    base_url: str,
    path: str,
    limit: int,
) -> dict[str, Any]:
    """One page of ``items`` (only its rows are built) and the next_url carrying the query."""
    offset = int(q.get("offset", "0") or 0)
    chunk = [row(x) for x in items[offset : offset + limit]]
    out: dict[str, Any] = {"results": chunk, "status": "OK", "count": len(chunk)}
    if offset + limit < len(items):
        carried = {k: v for k, v in q.items() if k != "offset"}
        carried["offset"] = str(offset + limit)
        carried["limit"] = str(limit)
        out["next_url"] = f"{base_url}{path}?cursor={_cursor_out(carried)}"
    return out


def _as_of(market: Market, q: Query) -> dt.date:
    return parse_date(q["date"], "date") if q.get("date") else market.end


def _utc(day: dt.date) -> str:
    return f"{day.isoformat()}T00:00:00Z"


def ticker_row(market: Market, x: Listing, as_of: dt.date) -> dict[str, Any]:
    """A /v3/reference/tickers result object."""
    row: dict[str, Any] = {
        "ticker": x.ticker,
        "name": x.name,
        "market": "stocks",
        "locale": "us",
        "primary_exchange": x.exchange,
        "type": x.type,
        "active": market.is_active(x, as_of),
        "currency_name": "usd",
        "cik": x.cik,
        "composite_figi": x.composite_figi,
        "share_class_figi": x.share_class_figi,
        "last_updated_utc": _utc(min(as_of, market.end)),
    }
    if x.delist_date is not None and x.delist_date <= as_of:
        row["delisted_utc"] = _utc(x.delist_date)
    return row


def tickers(market: Market, base_url: str, q: Query) -> Reply:
    """GET /v3/reference/tickers."""
    qq = with_cursor(q)
    limit = _limit(qq, 100, 1000)
    as_of = _as_of(market, qq)
    active = parse_bool(qq.get("active"), True)
    if qq.get("market", "stocks") not in ("stocks", ""):
        listings: list[Listing] = []
    else:
        listings = [x for x in market.symbols(as_of) if market.is_active(x, as_of) == active]
    for field_name, attr in (("type", "type"), ("exchange", "exchange")):
        if qq.get(field_name):
            listings = [x for x in listings if getattr(x, attr) == qq[field_name]]
    for fn, value in _filters(qq, "ticker"):
        listings = [x for x in listings if fn(x.ticker, value)]
    if qq.get("search"):
        needle = qq["search"].lower()
        listings = [x for x in listings if needle in x.ticker.lower() or needle in x.name.lower()]
    sort = qq.get("sort", "ticker") or "ticker"
    if sort not in ("ticker", "name", "type", "primary_exchange", "list_date"):
        msg = f"invalid sort {sort!r}"
        raise BadRequest(msg)
    attr = {"primary_exchange": "exchange"}.get(sort, sort)
    listings.sort(
        key=lambda x: (getattr(x, attr), x.ticker), reverse=qq.get("order", "asc") == "desc"
    )
    return _ok(
        _page(
            listings,
            lambda x: ticker_row(market, x, as_of),
            qq,
            base_url,
            "/v3/reference/tickers",
            limit,
        )
    )


def ticker_details(market: Market, ticker: str, q: Query) -> Reply:
    """GET /v3/reference/tickers/{ticker}."""
    as_of = _as_of(market, q)
    try:
        x = market.listing(ticker)
    except KeyError:
        return error(404, "Ticker not found.")
    if x.list_date > as_of:
        return error(404, "Ticker not found.")
    row = ticker_row(market, x, as_of)
    shares = int(market.shares_outstanding(ticker, as_of))
    row.update(
        {
            "list_date": x.list_date.isoformat(),
            "description": f"{x.name} is a simulated company of the Condvest offline market.",
            "ticker_root": x.ticker.split(".")[0],
            "round_lot": 100,
            "share_class_shares_outstanding": shares,
            "weighted_shares_outstanding": shares,
        }
    )
    if "." in x.ticker:
        row["ticker_suffix"] = x.ticker.split(".", 1)[1]
    cap = market.market_cap(ticker, as_of)
    if cap is not None:
        row["market_cap"] = cap
    if x.sic_code:
        row["sic_code"] = x.sic_code
        row["sic_description"] = x.sic_description
    return _ok({"results": row, "status": "OK"})


def splits(market: Market, base_url: str, q: Query) -> Reply:
    """GET /v3/reference/splits."""
    qq = with_cursor(q)
    limit = _limit(qq, 10, 1000)
    items = market.splits()
    for fn, value in _filters(qq, "ticker"):
        items = [s for s in items if fn(s.ticker, value)]
    for fn, value in _filters(qq, "execution_date"):
        day = parse_date(value, "execution_date")
        items = [s for s in items if fn(s.execution_date, day)]
    if qq.get("reverse_split"):
        rev = parse_bool(qq["reverse_split"], False)
        items = [s for s in items if (s.split_from > s.split_to) == rev]
    sort = qq.get("sort", "execution_date") or "execution_date"
    if sort not in ("execution_date", "ticker"):
        msg = f"invalid sort {sort!r}"
        raise BadRequest(msg)
    items = sorted(
        items,
        key=lambda s: (getattr(s, sort), s.ticker, s.execution_date),
        reverse=qq.get("order", "asc") == "desc",
    )
    return _ok(_page(items, split_row, qq, base_url, "/v3/reference/splits", limit))


def conditions(base_url: str, q: Query) -> Reply:
    """GET /v3/reference/conditions: the stock trade conditions the simulated tape uses.

    Polygon's default page is 10 rows (1,000 at most), so a client must follow ``next_url``.
    """
    qq = with_cursor(q)
    limit = _limit(qq, 10, 1000)
    rows = SIM_RULES.to_polygon()
    if qq.get("asset_class", "stocks") not in ("stocks", ""):
        rows = []
    if qq.get("data_type", "trade") not in ("trade", ""):
        rows = []
    if qq.get("id"):
        rows = [r for r in rows if str(r["id"]) == qq["id"]]
    return _ok(_page(rows, dict, qq, base_url, "/v3/reference/conditions", limit))


def split_row(s: Split) -> dict[str, Any]:
    """A /v3/reference/splits result object."""
    return {
        "execution_date": s.execution_date.isoformat(),
        "id": s.id,
        "split_from": s.split_from,
        "split_to": s.split_to,
        "ticker": s.ticker,
    }


# -- corporate actions (/stocks/v1) --------------------------------------------------------------
ActionEdits = Mapping[str, Mapping[str, Any] | None]
"""Control API edits by action id: field overrides, or None for a withdrawn action."""


def _v1_items(
    rows: list[dict[str, Any]], q: dict[str, str], date_field: str, type_field: str
) -> list[dict[str, Any]]:
    """Rows filtered and sorted as the vendor's v1 corporate-action endpoints do."""
    for fn, value in _filters(q, "ticker"):
        rows = [r for r in rows if fn(r["ticker"], value)]
    if q.get("ticker.any_of"):
        wanted = set(q["ticker.any_of"].split(","))
        rows = [r for r in rows if r["ticker"] in wanted]
    for fn, value in _filters(q, date_field):
        day = parse_date(value, date_field).isoformat()
        rows = [r for r in rows if fn(r[date_field], day)]
    if q.get(type_field):
        wanted = set(q[type_field].split(","))
        rows = [r for r in rows if r.get(type_field) in wanted]
    sort = q.get("sort") or f"{date_field}.desc"
    for part in reversed(sort.split(",")):
        name, _, direction = part.partition(".")
        if name not in ("ticker", date_field) or direction not in ("", "asc", "desc"):
            msg = f"invalid sort {part!r}"
            raise BadRequest(msg)
        rows = sorted(rows, key=lambda r: r[name], reverse=direction == "desc")
    return rows


def stock_splits(actions: CorporateActions, base_url: str, q: Query, edits: ActionEdits) -> Reply:
    """GET /stocks/v1/splits (limit 100 by default, 5,000 at most; ``next_url`` pages)."""
    qq = with_cursor(q)
    limit = _limit(qq, 100, 5000)
    rows = [edited(actions.split_row(s), edits) for s in actions.market.splits()]
    items = _v1_items([r for r in rows if r is not None], qq, "execution_date", "adjustment_type")
    return _ok(_page(items, dict, qq, base_url, "/stocks/v1/splits", limit))


def stock_dividends(
    actions: CorporateActions, base_url: str, q: Query, edits: ActionEdits
) -> Reply:
    """GET /stocks/v1/dividends (limit 100 by default, 5,000 at most; ``next_url`` pages)."""
    qq = with_cursor(q)
    limit = _limit(qq, 100, 5000)
    rows = [edited(dividend_row(d), edits) for d in actions.dividends()]
    items = _v1_items(
        [r for r in rows if r is not None], qq, "ex_dividend_date", "distribution_type"
    )
    if qq.get("frequency"):
        items = [r for r in items if str(r.get("frequency")) == qq["frequency"]]
    return _ok(_page(items, dict, qq, base_url, "/stocks/v1/dividends", limit))


def market_status(now_ms: int, session_open: bool) -> Reply:
    """GET /v1/marketstatus/now, at the simulated clock's time."""
    now = dt.datetime.fromtimestamp(now_ms / 1000, dt.UTC).astimezone(_NY)
    minutes = now.hour * 60 + now.minute
    weekday = now.weekday() < 5
    early = weekday and not session_open and 4 * 60 <= minutes < 9 * 60 + 30
    late = weekday and not session_open and 16 * 60 <= minutes < 20 * 60
    state = "open" if session_open else ("extended-hours" if early or late else "closed")
    exch = "open" if session_open else ("extended-hours" if early or late else "closed")
    return Reply(
        200,
        encode.dumps(
            {
                "afterHours": late,
                "currencies": {"crypto": "open", "fx": "open" if weekday else "closed"},
                "earlyHours": early,
                "exchanges": {"nasdaq": exch, "nyse": exch, "otc": exch},
                "market": state,
                "serverTime": now.replace(microsecond=0).isoformat(),
            }
        ),
    )
