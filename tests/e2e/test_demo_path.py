"""The demo path end to end on S3 (emulated), real Postgres and real Redis.

Simulator -> ``python -m bytewax.run dataflows.replay:flow`` -> S3 lake + Postgres ->
consolidate -> resample -> API. The API's bars are checked against bars computed here,
independently, from the simulator's own daily data and exchange_calendars directly.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import subprocess
import sys
from collections import defaultdict
from typing import Any

import exchange_calendars as xc
import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from core.lake import Lake
from core.schemas import FIB_INTERVALS
from core.settings import ApiSettings
from dataflows import corporate_actions
from dataflows.simulator import Market
from dataflows.simulator.server import SimulatorServer
from tests.services import simulator_fetch

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
FIRST = dt.date(2025, 2, 3)
LAST = dt.date(2025, 4, 30)
KEY = "e2e-key"


def _session_positions() -> dict[dt.date, int]:
    sessions = xc.get_calendar("XNYS", start="1962-01-02", end="2026-12-31").sessions
    return {ts.date(): i for i, ts in enumerate(sessions)}


def _expected_fib(
    rows: list[dict[str, Any]], n: int, last_session: dt.date
) -> list[dict[str, Any]]:
    """Calendar-anchored bars straight from the contract's words."""
    pos = _session_positions()
    by_session = sorted(pos.items(), key=lambda kv: kv[1])
    groups: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in sorted(rows, key=lambda r: r["date"]):
        groups[pos[r["date"]] // n].append(r)
    out = []
    for g, members in sorted(groups.items()):
        group_last = by_session[(g + 1) * n - 1][0]
        out.append(
            {
                "start_date": members[0]["date"].isoformat(),
                "end_date": members[-1]["date"].isoformat(),
                "open": members[0]["open"],
                "high": max(m["high"] for m in members),
                "low": min(m["low"] for m in members),
                "close": members[-1]["close"],
                "volume": float(sum(m["volume"] for m in members)),
                "days": len(members),
                "complete": group_last <= last_session,
            }
        )
    return out


def _split_adjusted(
    market: Market, ticker: str, rows: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Rows x S(d), written out from the contract's words and the simulator's own splits."""
    out = []
    for r in rows:
        f = math.prod(
            s.split_from / s.split_to for s in market.splits(ticker) if s.execution_date > r["date"]
        )
        prices = {k: r[k] * f for k in ("open", "high", "low", "close")}
        out.append({**r, **prices, "volume": r["volume"] / f})
    return out


def test_demo_path_on_s3_postgres_redis(
    s3_lake: Lake, aws_endpoint: str, pg_url: str, redis_server_url: str, redis_prefix: str
) -> None:
    market = Market(seed=11, n_symbols=25, start=FIRST, end=LAST)
    with SimulatorServer(market, host="127.0.0.1", port=0) as sim:
        env = {
            **os.environ,
            "LAKE_URL": s3_lake.url,
            "AWS_ENDPOINT_URL": aws_endpoint,
            "DATABASE_URL": pg_url,
            "POLYGON_REST_URL": sim.rest_url,
            "REPLAY_START": FIRST.isoformat(),
            "REPLAY_END": LAST.isoformat(),
        }
        env.pop("POLYGON_API_KEY", None)
        done = subprocess.run(
            [sys.executable, "-m", "bytewax.run", "dataflows.replay:flow"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        actions = corporate_actions.run(simulator_fetch(sim.rest_url), s3_lake, pg_url)
        assert actions.splits is not None and actions.splits.fetched == len(market.splits())

    from batch import consolidate, resample

    report = consolidate.run(s3_lake)
    assert report.ok, report.failed
    resample.run(s3_lake, intervals=FIB_INTERVALS)

    settings = ApiSettings(
        lake_url=s3_lake.url,
        aws_endpoint_url=aws_endpoint,
        database_url=SecretStr(pg_url),
        redis_url=SecretStr(redis_server_url),
        redis_prefix=redis_prefix,
        api_keys=SecretStr(KEY),
    )
    from api.main import create_app

    client = TestClient(create_app(settings))
    headers = {"X-API-Key": KEY}
    assert client.get("/health").status_code == 200
    assert client.get("/v1/bars/AAPL", params={"interval": "1d"}).status_code == 401

    listings = [x for x in market.symbols() if market.is_active(x, FIRST)][:5]
    assert listings, "the simulated market has no symbol listed over the window"
    split_symbols = sorted({s.ticker for s in market.splits() if FIRST < s.execution_date <= LAST})
    assert split_symbols, "the simulated market has no split in the window"
    listings += [market.listing(t) for t in split_symbols if market.listing(t) not in listings]
    last_session = max(
        d for x in market.symbols() for d in market.daily(x.ticker, FIRST, LAST).dates()
    )
    for listing in listings:
        daily = market.daily(listing.ticker, FIRST, LAST).to_arrow().to_pylist()
        raw = [
            {
                "date": r["date"],
                "open": r["open"],
                "high": r["high"],
                "low": r["low"],
                "close": r["close"],
                "volume": r["volume"],
            }
            for r in daily
        ]
        got = client.get(
            f"/v1/bars/{listing.ticker}",
            params={"interval": "1d", "adjusted": "none"},
            headers=headers,
        )
        assert got.status_code == 200, got.text
        api_daily = got.json()["bars"]
        assert [b["date"] for b in api_daily] == [r["date"].isoformat() for r in raw]
        for b, r in zip(api_daily, raw, strict=True):
            assert (b["open"], b["high"], b["low"], b["close"]) == (
                r["open"],
                r["high"],
                r["low"],
                r["close"],
            )
            assert np.isclose(b["volume"], r["volume"])
        rows = _split_adjusted(market, listing.ticker, raw)
        got = client.get(f"/v1/bars/{listing.ticker}", params={"interval": "1d"}, headers=headers)
        assert got.status_code == 200 and got.json()["adjusted"] == "split"
        for b, r in zip(got.json()["bars"], rows, strict=True):
            assert {k: b[k] for k in ("open", "high", "low", "close", "volume")} == pytest.approx(
                {k: r[k] for k in ("open", "high", "low", "close", "volume")}, rel=1e-12
            )
        for n in FIB_INTERVALS:
            want = _expected_fib(rows, n, last_session)
            got = client.get(
                f"/v1/bars/{listing.ticker}", params={"interval": f"{n}d"}, headers=headers
            )
            assert got.status_code == 200, got.text
            bars = got.json()["bars"]
            assert len(bars) == len(want), (listing.ticker, n)
            for b, w in zip(bars, want, strict=True):
                assert {k: b[k] for k in w} == pytest.approx(w), (listing.ticker, n)

    # every split of the window: raw closes jump by about its ratio, adjusted ones do not
    for split in (s for s in market.splits() if FIRST < s.execution_date <= LAST):
        eve = market.session_dates()[market.session_of(split.execution_date) - 1]  # type: ignore[operator]
        params = {
            "interval": "1d",
            "start": eve.isoformat(),
            "end": split.execution_date.isoformat(),
        }
        adjusted = client.get(f"/v1/bars/{split.ticker}", params=params, headers=headers).json()
        raw_body = client.get(
            f"/v1/bars/{split.ticker}", params={**params, "adjusted": "none"}, headers=headers
        ).json()
        adj_closes = [b["close"] for b in adjusted["bars"]]
        raw_closes = [b["close"] for b in raw_body["bars"]]
        if len(adj_closes) == 2:  # (a halt may leave the eve without a bar)
            assert abs(adj_closes[0] / adj_closes[1] - 1) < 0.15, split
            jump = raw_closes[0] / raw_closes[1]
            assert 0.7 < jump / (split.split_to / split.split_from) < 1.4, split
