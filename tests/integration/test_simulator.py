"""The simulator through the real polygon-api-client: REST, pagination, WebSocket and faults."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import urllib3
from polygon import RESTClient, WebSocketClient
from polygon.exceptions import AuthError, BadResponse
from websockets.asyncio.client import connect

from core import calendar
from core.conditions import fallback, from_polygon
from dataflows.simulator.market import Market
from dataflows.simulator.process import SimulatorProcess
from dataflows.simulator.server import SimulatorServer
from tests.tape_truth import truth_bars

pytestmark = pytest.mark.integration
START, END = dt.date(2024, 1, 2), dt.date(2024, 12, 31)
GROUPED = "/v2/aggs/grouped/locale/us/market/stocks/{}"
http = urllib3.PoolManager(retries=False)


@pytest.fixture(scope="module")
def market() -> Market:
    return Market(seed=7, n_symbols=300, start=START, end=END)


@pytest.fixture(scope="module")
def server(market: Market) -> Iterator[SimulatorServer]:
    with SimulatorServer(market, ws_interval=0.05) as s:
        yield s


@pytest.fixture()
def sim(server: SimulatorServer) -> SimulatorServer:
    server.set_faults(reset=True)
    server.reset_stats()
    return server


@pytest.fixture()
def client(sim: SimulatorServer) -> RESTClient:
    return RESTClient(api_key="k", base=sim.rest_url, retries=0)


def get(sim: SimulatorServer, path: str, **headers: str) -> urllib3.BaseHTTPResponse:
    return http.request(
        "GET", sim.rest_url + path, headers=headers or {"Authorization": "Bearer k"}
    )


def key() -> str:
    return f"key-{uuid.uuid4().hex[:8]}"


async def collect(ws: WebSocketClient, seconds: float) -> list[Any]:
    got: list[Any] = []

    async def keep(msgs: list[Any]) -> None:
        got.extend(msgs)

    task = asyncio.create_task(ws.connect(keep))
    await asyncio.sleep(seconds)
    await ws.close()
    try:
        await asyncio.wait_for(asyncio.shield(task), 5)
    except TimeoutError:  # closed while reconnecting: stop the loop ourselves
        task.cancel()
    return got


# -- REST ----------------------------------------------------------------------------------------
def test_grouped_daily(client: RESTClient, market: Market, sim: SimulatorServer) -> None:
    day = dt.date(2024, 5, 15)
    rows = client.get_grouped_daily_aggs(day.isoformat(), adjusted=False)
    expected = market.grouped(day)
    assert [r.ticker for r in rows] == expected.symbol.tolist()
    assert [r.close for r in rows] == expected.close.tolist()
    assert [r.volume for r in rows] == expected.volume.tolist()
    assert {r.timestamp for r in rows} == {market.grouped_t(day)}
    assert client.get_grouped_daily_aggs("2024-12-25") == []  # holiday: no results, like Polygon
    assert client.get_grouped_daily_aggs("2024-05-18") == []  # weekend
    body = json.loads(get(sim, GROUPED.format("2024-12-25")).data)
    assert body["resultsCount"] == 0 and "results" not in body and body["status"] == "OK"
    split = next(s for s in market.splits() if dt.date(2024, 3, 1) < s.execution_date <= END)
    before = calendar.previous_session(split.execution_date)
    raw = {
        r.ticker: r.close for r in client.get_grouped_daily_aggs(before.isoformat(), adjusted=False)
    }
    adj = {
        r.ticker: r.close for r in client.get_grouped_daily_aggs(before.isoformat(), adjusted=True)
    }
    later = math.prod(s.ratio for s in market.splits(split.ticker) if s.execution_date > before)
    assert adj[split.ticker] == pytest.approx(raw[split.ticker] / later, rel=1e-9)


def test_range_aggs_paginate_over_50000_minute_rows(
    client: RESTClient, market: Market, sim: SimulatorServer
) -> None:
    first, last = dt.date(2024, 1, 2), dt.date(2024, 8, 30)
    aggs = list(
        client.list_aggs(
            "AAPL", 1, "minute", first.isoformat(), last.isoformat(), adjusted=False, limit=50_000
        )
    )
    expected = market.minute("AAPL", first, last)
    assert len(aggs) > 50_000
    assert [a.timestamp for a in aggs] == expected.t.tolist()
    assert [a.close for a in aggs] == expected.close.tolist()
    assert sim.stats()["by_route"]["aggs"] == math.ceil(len(aggs) / 50_000)


def test_range_aggs_limits_truncation_and_sorting(
    client: RESTClient, market: Market, sim: SimulatorServer
) -> None:
    daily = market.daily("MSFT", START, END)
    assert (
        len(client.get_aggs("MSFT", 1, "day", START, END, adjusted=False, limit=100)) == 100
    )  # silent
    paged = list(client.list_aggs("MSFT", 1, "day", START, END, adjusted=False, limit=100))
    assert [a.timestamp for a in paged] == daily.t.tolist()
    assert sim.stats()["by_route"]["aggs"] == 1 + math.ceil(len(daily) / 100)
    desc = list(
        client.list_aggs("MSFT", 1, "day", START, END, adjusted=False, sort="desc", limit=70)
    )
    assert [a.timestamp for a in desc] == daily.t.tolist()[::-1]
    body = json.loads(get(sim, f"/v2/aggs/ticker/MSFT/range/1/day/{START}/{END}?limit=100").data)
    assert body["resultsCount"] == 100 and body["next_url"].startswith(
        f"{sim.rest_url}/v2/aggs/ticker/MSFT/"
    )
    body = json.loads(
        get(sim, f"/v2/aggs/ticker/MSFT/range/1/minute/{START}/2024-01-31?adjusted=false").data
    )
    assert body["resultsCount"] == 5000 and "next_url" in body  # default limit
    body = json.loads(get(sim, f"/v2/aggs/ticker/MSFT/range/1/day/{START}/{END}?limit=900000").data)
    assert body["resultsCount"] == len(daily) and "next_url" not in body
    weekly = list(client.list_aggs("MSFT", 1, "week", START, END, adjusted=False, limit=50))
    assert 50 <= len(weekly) <= 53 and sum(w.volume for w in weekly) == daily.volume.sum()
    assert get(sim, f"/v2/aggs/ticker/MSFT/range/1/fortnight/{START}/{END}").status == 400
    assert (
        json.loads(get(sim, f"/v2/aggs/ticker/NOPE/range/1/day/{START}/{END}").data)["resultsCount"]
        == 0
    )


def test_tickers_and_details(client: RESTClient, market: Market, sim: SimulatorServer) -> None:
    active = [x.ticker for x in market.symbols(END) if market.is_active(x, END)]
    listed = list(client.list_tickers(market="stocks", active=True, limit=100))
    assert [t.ticker for t in listed] == sorted(active)
    assert sim.stats()["by_route"]["tickers"] == math.ceil(len(active) / 100)
    delisted = list(client.list_tickers(market="stocks", active=False, limit=1000))
    assert delisted and all(t.delisted_utc and not t.active for t in delisted)
    early = list(client.list_tickers(market="stocks", date="2024-01-02", limit=1000))
    assert len(early) < len(listed) + len(delisted)
    d = client.get_ticker_details("AAPL")
    assert (d.ticker, d.type, d.primary_exchange, d.sic_code) == ("AAPL", "CS", "XNAS", "3571")
    assert d.market_cap and d.market_cap > 1e9 and d.list_date and d.active
    etf = client.get_ticker_details("SPY")
    assert etf.type == "ETF" and etf.market_cap is None
    gone = client.get_ticker_details(delisted[0].ticker)
    assert gone.active is False and gone.delisted_utc
    with pytest.raises(BadResponse):
        client.get_ticker_details("NOPE")


def test_splits(client: RESTClient, market: Market, sim: SimulatorServer) -> None:
    got = list(
        client.list_splits(
            execution_date_gte="2024-01-02", execution_date_lte="2024-12-31", limit=10
        )
    )
    expected = [s for s in market.splits() if START <= s.execution_date <= END]
    assert [(s.ticker, s.execution_date, s.split_from, s.split_to) for s in got] == [
        (s.ticker, s.execution_date.isoformat(), s.split_from, s.split_to) for s in expected
    ]
    assert sim.stats()["by_route"]["splits"] == math.ceil(len(expected) / 10)
    one = expected[0]
    assert [s.id for s in client.list_splits(ticker=one.ticker)] == [
        s.id for s in market.splits(one.ticker)
    ]
    assert all(
        s.split_from > s.split_to for s in client.list_splits(reverse_split=True, limit=1000)
    )


def test_conditions_in_polygons_shape(client: RESTClient, sim: SimulatorServer) -> None:
    """The real client pages through /v3/reference/conditions (10 rows a page by default)."""
    got = list(client.list_conditions(asset_class="stocks", data_type="trade"))
    assert len(got) > 10 and sim.stats()["by_route"]["conditions"] > 1
    by_id = {c.id: c.update_rules.consolidated for c in got if c.update_rules}
    odd = by_id[37]
    assert odd is not None
    assert (odd.updates_high_low, odd.updates_open_close, odd.updates_volume) == (
        False, False, True,
    )  # fmt: skip
    page = json.loads(get(sim, "/v3/reference/conditions?limit=1000").data)
    assert from_polygon(page["results"]).rules == fallback().rules


def test_market_status(client: RESTClient, sim: SimulatorServer) -> None:
    sim.set_clock(dt.date(2024, 6, 3), offset=3600)
    status = client.get_market_status()
    assert status.market == "open"
    assert status.server_time and status.server_time.startswith("2024-06-03T10:30")


def test_api_key_is_required(market: Market) -> None:
    with SimulatorServer(market, api_key="right") as locked:
        path = GROUPED.format("2024-05-15")
        missing = http.request("GET", locked.rest_url + path)
        assert missing.status == 401 and json.loads(missing.data)["status"] == "ERROR"
        assert http.request("GET", f"{locked.rest_url}{path}?apiKey=right").status == 200
        with pytest.raises(BadResponse, match="Unknown API Key"):
            RESTClient(api_key="wrong", base=locked.rest_url, retries=0).get_grouped_daily_aggs(
                "2024-05-15"
            )
        assert (
            len(
                RESTClient(api_key="right", base=locked.rest_url).get_grouped_daily_aggs(
                    "2024-05-15"
                )
            )
            > 0
        )

        async def bad_ws() -> None:
            ws = WebSocketClient(
                api_key="wrong", feed=locked.ws_feed, market="stocks", secure=False
            )

            async def ignore(msgs: list[Any]) -> None:
                return None

            await asyncio.wait_for(ws.connect(ignore), 10)

        with pytest.raises(AuthError):
            asyncio.run(bad_ws())


# -- faults --------------------------------------------------------------------------------------
def test_429_with_retry_after(sim: SimulatorServer) -> None:
    sim.set_faults(rate_limit_next=1, retry_after=1)
    r = get(sim, GROUPED.format("2024-05-15"))
    assert r.status == 429 and r.headers["Retry-After"] == "1"
    sim.set_faults(rate_limit_next=1, retry_after=1)
    patient = RESTClient(api_key="k", base=sim.rest_url, retries=3)
    t0 = time.monotonic()
    assert len(patient.get_grouped_daily_aggs("2024-05-15")) > 0
    assert time.monotonic() - t0 >= 0.95  # urllib3 honoured Retry-After
    assert sim.stats()["by_status"] == {"429": 2, "200": 1}


def test_server_errors(sim: SimulatorServer, client: RESTClient) -> None:
    sim.set_faults(error_next=2, error_status=503)
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        client.get_grouped_daily_aggs("2024-05-15")
    assert get(sim, GROUPED.format("2024-05-15")).status == 503
    assert len(client.get_grouped_daily_aggs("2024-05-15")) > 0
    assert sim.stats()["by_status"] == {"503": 2, "200": 1}
    sim.set_faults(error_next=1, path_prefix="/v3/")
    assert get(sim, GROUPED.format("2024-05-15")).status == 200
    assert get(sim, "/v3/reference/tickers").status == 503  # error_status is kept


def test_probabilistic_faults_are_deterministic(sim: SimulatorServer) -> None:
    def run() -> list[int]:
        sim.set_faults(reset=True, rate_limit_p=0.3, error_p=0.2, seed=5)
        return [get(sim, "/v1/marketstatus/now").status for _ in range(30)]

    first = run()
    assert first == run()
    assert {200, 429, 500} <= set(first)


def test_slow_responses(sim: SimulatorServer) -> None:
    sim.set_faults(delay=0.4, delay_next=1)
    t0 = time.monotonic()
    assert get(sim, GROUPED.format("2024-05-15")).status == 200
    assert time.monotonic() - t0 >= 0.4
    t0 = time.monotonic()
    get(sim, GROUPED.format("2024-05-16"))
    assert time.monotonic() - t0 < 0.4
    sim.set_faults(delay=0.5)
    # polygon-api-client 1.16 ignores its read_timeout, so a caller must bound the wait itself
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        http.request(
            "GET",
            sim.rest_url + GROUPED.format("2024-05-15"),
            headers={"Authorization": "Bearer k"},
            timeout=urllib3.Timeout(connect=1, read=0.1),
        )


def test_bad_rows_at_runtime(sim: SimulatorServer, client: RESTClient) -> None:
    sim.set_faults(bad_rows={"2024-03-01": ["missing_field", "high_low"]})
    rows = json.loads(get(sim, GROUPED.format("2024-03-01")).data)["results"]
    assert sum("c" not in r for r in rows) == 1
    assert sum(r["h"] < r["l"] for r in rows) == 1
    assert sum(r.close is None for r in client.get_grouped_daily_aggs("2024-03-01")) == 1
    aggs = json.loads(get(sim, "/v2/aggs/ticker/AAPL/range/1/day/2024-02-26/2024-03-08").data)[
        "results"
    ]
    assert sum("c" not in r for r in aggs) == 1 and sum(r["h"] < r["l"] for r in aggs) == 1
    sim.set_faults(bad_rows={})
    assert all("c" in r for r in json.loads(get(sim, GROUPED.format("2024-03-01")).data)["results"])


def test_withheld_session_returns_no_rows(sim: SimulatorServer, client: RESTClient) -> None:
    sim.set_faults(empty_days=["2024-03-01"])
    body = json.loads(get(sim, GROUPED.format("2024-03-01")).data)
    assert body["status"] == "OK" and body["resultsCount"] == 0 and "results" not in body
    assert client.get_grouped_daily_aggs("2024-03-01") == []
    sim.set_faults(empty_days=[])
    assert len(client.get_grouped_daily_aggs("2024-03-01")) > 0


# -- WebSocket -----------------------------------------------------------------------------------
def test_websocket_trades_and_minute_aggregates(sim: SimulatorServer, market: Market) -> None:
    day = dt.date(2024, 6, 3)
    sim.set_clock(day, offset=0, speed=120)
    ws = WebSocketClient(
        api_key=key(),
        feed=sim.ws_feed,
        market="stocks",
        secure=False,
        subscriptions=["T.AAPL", "AM.AAPL", "AM.MSFT"],
    )
    got = asyncio.run(collect(ws, 2.6))
    trades = [m for m in got if m.event_type == "T"]
    aggs = [m for m in got if m.event_type == "AM"]
    assert trades and {t.symbol for t in trades} == {"AAPL"}
    assert len(aggs) >= 4 and {a.symbol for a in aggs} == {"AAPL", "MSFT"}
    lo, hi = min(t.timestamp for t in trades), max(t.timestamp for t in trades)
    expected = market.trades(day, ms(lo), ms(hi + 1), ["AAPL"])
    unique = list({(t.id, t.exchange): t for t in trades}.values())  # some are sent twice
    assert sorted((t.timestamp, t.sequence_number, t.price, t.size) for t in unique) == list(
        zip(
            expected.t.tolist(), expected.seq.tolist(), expected.price.tolist(),
            expected.size.tolist(), strict=True,
        )
    )  # fmt: skip
    events = [
        {"sym": t.symbol, "x": t.exchange, "i": t.id, "p": t.price, "s": t.size,
         "t": t.timestamp, "q": t.sequence_number, "c": t.conditions}
        for t in trades
    ]  # fmt: skip
    truth = truth_bars(events)
    bars = market.minute("AAPL", day, day)
    for a in (a for a in aggs if a.symbol == "AAPL"):
        row = bars.take(bars.t == a.start_timestamp)
        assert (a.open, a.high, a.low, a.close, a.volume) == (
            row.open[0],
            row.high[0],
            row.low[0],
            row.close[0],
            row.volume[0],
        )
        assert a.end_timestamp == a.start_timestamp + 60_000
        if lo <= a.start_timestamp and a.end_timestamp <= hi:  # a minute received whole
            want = truth[("AAPL", a.start_timestamp)]
            assert (want["open"], want["high"], want["low"], want["close"], want["volume"]) == (
                a.open, a.high, a.low, a.close, a.volume,
            )  # fmt: skip
    assert sim.stats()["ws"]["connections"] == 1


def ms(value: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(value / 1000, dt.UTC)


def test_websocket_subscribe_unsubscribe_and_one_connection_per_key(sim: SimulatorServer) -> None:
    sim.set_clock(dt.date(2024, 6, 3), offset=600, speed=60)
    k = key()

    async def run() -> tuple[list[Any], list[Any], Any]:
        async with connect(f"ws://{sim.ws_feed}/stocks") as first:
            greeting = json.loads(await first.recv())
            await first.send(json.dumps({"action": "auth", "params": k}))
            auth = json.loads(await first.recv())
            await first.send(json.dumps({"action": "subscribe", "params": "T.*,AM.AAPL"}))
            subscribed = json.loads(await first.recv())
            data = json.loads(await first.recv())
            await first.send(json.dumps({"action": "unsubscribe", "params": "T.*,AM.AAPL"}))
            async with connect(f"ws://{sim.ws_feed}/stocks") as second:
                await second.recv()
                await second.send(json.dumps({"action": "auth", "params": k}))
                refused = json.loads(await second.recv())
                await asyncio.wait_for(second.wait_closed(), 5)
                code = second.close_code
        return [greeting, auth, subscribed], [data, refused], code

    (greeting, auth, subscribed), (data, refused), code = asyncio.run(run())
    assert greeting == [
        {"ev": "status", "status": "connected", "message": "Connected Successfully"}
    ]
    assert auth[0]["status"] == "auth_success"
    assert [s["message"] for s in subscribed] == ["subscribed to: T.*", "subscribed to: AM.AAPL"]
    assert data and {e["ev"] for e in data} <= {"T", "AM", "status"}
    assert len({e["sym"] for e in data if e["ev"] == "T"}) > 1
    assert refused[0]["status"] == "max_connections"
    assert code == 1008
    assert sim.stats()["ws"]["rejected"] == 1


def test_websocket_disconnect_after_n_messages(sim: SimulatorServer) -> None:
    sim.set_clock(dt.date(2024, 6, 3), offset=900, speed=60)
    sim.set_faults(ws_disconnect_after=3)
    ws = WebSocketClient(
        api_key=key(),
        feed=sim.ws_feed,
        market="stocks",
        secure=False,
        subscriptions=["T.*"],
        max_reconnects=None,
    )
    got = asyncio.run(collect(ws, 2.0))
    stats = sim.stats()["ws"]
    assert stats["disconnects"] >= 2
    assert stats["connections"] >= 3  # the real client reconnected and resubscribed each time
    assert stats["messages"] > 3
    assert len({m.symbol for m in got}) > 1


# -- standalone ----------------------------------------------------------------------------------
def test_cli_and_subprocess_control_api() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "dataflows.simulator", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--symbols" in out.stdout and "--seed" in out.stdout
    args = [
        "--symbols",
        "40",
        "--start",
        "2024-01-02",
        "--end",
        "2024-03-28",
        "--bad-rows",
        "2024-02-01:weekend",
    ]
    with SimulatorProcess(args) as proc:
        c = RESTClient(api_key="k", base=proc.rest_url, retries=0)
        rows = c.get_grouped_daily_aggs("2024-02-01")
        assert 30 <= len(rows) <= 40
        assert sum(r.timestamp != rows[0].timestamp for r in rows) == 1
        proc.set_faults(error_next=1)
        with pytest.raises(urllib3.exceptions.MaxRetryError):
            c.get_grouped_daily_aggs("2024-02-02")
        stats = proc.stats()
        assert stats["by_status"] == {"200": 1, "500": 1}
        proc.set_clock(dt.date(2024, 3, 28), offset=60, speed=2)
        assert np.isclose(len(c.get_grouped_daily_aggs("2024-02-02")), len(rows), atol=5)
