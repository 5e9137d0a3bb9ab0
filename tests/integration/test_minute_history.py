"""Minute history against the simulator, real Postgres and a local lake."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import psycopg
import pyarrow.compute as pc
import pytest
from pydantic import SecretStr

from batch.engine import minutes
from core import calendar, layout
from core.lake import Lake
from core.settings import ReplaySettings
from core.stores import postgres
from dataflows import minute_history
from dataflows.connectors.polygon import Backoff, PolygonGateway
from dataflows.simulator.market import Market
from dataflows.simulator.server import SimulatorServer

pytestmark = pytest.mark.integration
KEY = "pk_minutes_secret_77"
DAYS = [dt.date(2024, 11, 26), dt.date(2024, 11, 27), dt.date(2024, 11, 29)]  # 29th: half day


@pytest.fixture(scope="module")
def market() -> Market:
    return Market(seed=3, n_symbols=5, start=dt.date(2024, 11, 1), end=dt.date(2024, 12, 6))


@pytest.fixture(scope="module")
def server(market: Market) -> Iterator[SimulatorServer]:
    with SimulatorServer(market, api_key=KEY) as s:
        yield s


@pytest.fixture()
def sim(server: SimulatorServer) -> Iterator[SimulatorServer]:
    server.set_faults(reset=True)
    server.reset_stats()
    yield server
    server.set_faults(reset=True)


def fetcher(sim: SimulatorServer) -> PolygonGateway:
    settings = ReplaySettings(
        polygon_api_key=SecretStr(KEY), polygon_rest_url=sim.rest_url, polygon_rps=1000.0
    )
    return PolygonGateway.from_settings(settings, backoff=Backoff(0.01, 0.05))


def aggs_requests(sim: SimulatorServer) -> int:
    return int(sim.stats()["by_route"].get("aggs", 0))


def test_symbols_every_page_into_session_fragments_and_reruns_fetch_only_whats_missing(
    sim: SimulatorServer, market: Market, local_lake: Lake, pg_url: str
) -> None:
    symbols = [market.tickers[0], market.tickers[1]]
    gw = fetcher(sim)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        postgres.migrate(conn)
        got = minute_history.run_symbols(gw.get_json, local_lake, conn, symbols, DAYS, limit=300)
        assert got.failed == {} and got.files == len(DAYS)
        want_rows = sum(len(market.minute(s, DAYS[0], DAYS[-1])) for s in symbols)
        assert got.rows == want_rows
        assert got.pages == sum(
            -(-len(market.minute(s, DAYS[0], DAYS[-1])) // 300) for s in symbols
        )
        assert minutes.run(local_lake).failed == {}
        for day in DAYS:
            for s in symbols:
                ref = market.minute(s, day, day)
                t = minutes.read_symbol_day(local_lake, day, s)
                assert t["start"].cast("int64").to_pylist() == [x * 1000 for x in ref.t.tolist()]
                assert t["close"].to_pylist() == ref.close.tolist()
                assert t["volume"].to_pylist() == ref.volume.tolist()
                assert set(t["source"].to_pylist()) == {"rest"}
                assert np.all(pc.equal(t["date"], day).to_numpy(zero_copy_only=False))
        close = calendar.session_close(DAYS[-1])
        last = minutes.read_symbol_day(local_lake, DAYS[-1], symbols[0])["start"][-1].as_py()
        assert last < close and close.hour == 18  # 13:00 New York: the half day

        # the same run again: nothing is fetched, the files are the same
        keys = [e.key for e in local_lake.list(layout.MINUTE)]
        sim.reset_stats()
        again = minute_history.run_symbols(gw.get_json, local_lake, conn, symbols, DAYS)
        assert aggs_requests(sim) == 0 and again.skipped == len(DAYS) * 2
        # one session forgotten by the ledger: only it is fetched, into the same key
        conn.execute("DELETE FROM ingest_minutes WHERE session = %s", (DAYS[1],))
        sim.reset_stats()
        healed = minute_history.run_symbols(gw.get_json, local_lake, conn, symbols, DAYS)
        assert aggs_requests(sim) == 2 and healed.files == 1
        assert [e.key for e in local_lake.list(layout.MINUTE)] == keys
        statuses = conn.execute("SELECT DISTINCT status FROM ingest_minutes").fetchall()
        assert statuses == [("complete",)]


def test_all_walks_the_market_session_by_session(
    sim: SimulatorServer, market: Market, local_lake: Lake, pg_url: str
) -> None:
    gw = fetcher(sim)
    day = DAYS[-1]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        postgres.migrate(conn)
        got = minute_history.run_market(gw.get_json, local_lake, conn, [day])
        assert got.failed == {}
        traded = {r["T"] for r in gw.get_json(
            f"/v2/aggs/grouped/locale/us/market/stocks/{day}", {"adjusted": "false"})["results"]}  # fmt: skip
        assert got.symbols == len(traded)
        [frag] = local_lake.list(layout.minute_dir(day))
        held = set(local_lake.read_table(frag.key)["symbol"].to_pylist())
        assert held == traded
        row = conn.execute(
            "SELECT status FROM ingest_minutes WHERE session = %s AND symbol = '*'", (day,)
        ).fetchone()
        assert row == ("complete",)
        sim.reset_stats()
        minute_history.run_market(gw.get_json, local_lake, conn, [day])
        assert sim.stats()["requests"] == 0


def test_bad_rows_are_quarantined_with_a_reason() -> None:
    rows = [
        {"t": 1_732_890_600_000, "o": 10, "h": 11, "l": 9, "c": 10.5, "v": 100, "vw": 10, "n": 3},
        {"t": 1_732_890_660_000, "o": 10, "h": 9, "l": 11, "c": 10.5, "v": 100, "vw": 10, "n": 3},
        {"t": 1_732_890_661_000, "o": 10, "h": 11, "l": 9, "c": 10.5, "v": 100, "vw": 10, "n": 3},
    ]
    now = dt.datetime(2024, 11, 30, tzinfo=dt.UTC)
    valid, rejected = minute_history.check_minutes(minute_history.minute_rows("AAPL", rows), now)
    assert valid.num_rows == 1 and valid["date"][0].as_py() == dt.date(2024, 11, 29)
    reasons = rejected["reason"].to_pylist()
    assert "high < low" in reasons[0] and reasons[1] == "start is not on the minute"


def test_cli_help_and_usage_errors() -> None:
    cmd = [sys.executable, "-m", "dataflows.backfill", "--minutes"]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    ok = subprocess.run([*cmd, "--help"], capture_output=True, text=True, env=env, check=False)
    assert ok.returncode == 0 and "--all" in ok.stdout
    bad = subprocess.run([*cmd, "--symbols", "AAPL", "--start", "2024-13-01"],
                         capture_output=True, text=True, env=env, check=False)  # fmt: skip
    assert bad.returncode == 2 and "invalid date" in bad.stderr
