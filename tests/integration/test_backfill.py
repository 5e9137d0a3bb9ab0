"""Backfill against the simulator, real Postgres and a local lake; the key never in any log."""

from __future__ import annotations

import datetime as dt
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pyarrow.compute as pc
import pytest
from pydantic import SecretStr

from core import calendar, layout
from core.lake import Lake
from core.settings import ReplaySettings
from core.stores import postgres
from dataflows import backfill
from dataflows.connectors.polygon import Backoff, PolygonError, PolygonGateway
from dataflows.simulator.market import Market
from dataflows.simulator.server import SimulatorServer

pytestmark = pytest.mark.integration
KEY = "pk_integration_secret_4b1d"
START, END = dt.date(2024, 1, 2), dt.date(2024, 12, 31)


@pytest.fixture(scope="module")
def market() -> Market:
    """A small market whose history reaches back to 1962 (about 16,000 sessions)."""
    return Market(seed=7, n_symbols=12, start=START, end=END, history_start=calendar.EPOCH)


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


def gateway(sim: SimulatorServer, attempts: int = 3) -> PolygonGateway:
    settings = ReplaySettings(
        polygon_api_key=SecretStr(KEY),
        polygon_rest_url=sim.rest_url,
        polygon_rps=1000.0,
        polygon_max_attempts=attempts,
    )
    return PolygonGateway.from_settings(settings, backoff=Backoff(0.01, 0.05))


def test_full_history_one_range_file_per_symbol(
    sim: SimulatorServer, market: Market, local_lake: Lake, pg_url: str
) -> None:
    symbols = ["AAPL", "MSFT"]

    def go() -> backfill.Summary:
        return backfill.run(
            gateway(sim).get_json, local_lake, symbols, calendar.EPOCH, END,
            database_url=pg_url, cache_window_days=365, limit=5000, today=END,
        )  # fmt: skip

    summary = go()
    assert summary.failed == {}
    cutoff = END - dt.timedelta(days=365)
    with psycopg.connect(pg_url) as conn:
        for s in symbols:
            want = market.daily(s, calendar.EPOCH, END).to_arrow()
            assert want.num_rows > 15_000
            [entry] = local_lake.list(layout.symbol_dir(s))
            first, last = want["date"][0].as_py(), want["date"][-1].as_py()
            assert entry.key == layout.range_fragment(s, first, last)
            got = local_lake.read_table(entry.key)
            assert got.num_rows == want.num_rows
            assert got["close"].equals(want["close"]) and got["date"].equals(want["date"])
            row = conn.execute(
                "SELECT first_date, last_date, backfilled_at IS NOT NULL FROM ingest_symbols"
                " WHERE symbol = %s",
                (s,),
            ).fetchone()
            assert row == (first, last, True)
            n_pg = conn.execute(
                "SELECT count(*), min(date) FROM raw_ohlcv WHERE symbol = %s", (s,)
            ).fetchone()
            recent = pc.sum(pc.greater_equal(want["date"], cutoff)).as_py()
            assert n_pg is not None and n_pg[0] == recent and n_pg[1] >= cutoff
    assert summary.pages == sum(
        -(-market.daily(s, calendar.EPOCH, END).to_arrow().num_rows // 5000) for s in symbols
    )
    assert summary.files == 2

    again = go()
    assert again.failed == {} and again.rows == summary.rows
    assert len(local_lake.list(layout.DAILY)) == 2


def test_more_than_50000_rows_fetched_in_full(sim: SimulatorServer, market: Market) -> None:
    first, last = dt.date(2024, 1, 2), dt.date(2024, 7, 31)
    want = market.minute("AAPL", first, last)
    rows, n_pages = backfill.fetch_aggs(
        gateway(sim).get_json, "AAPL", first, last, timespan="minute"
    )
    assert len(want) > 50_000
    assert n_pages == 2
    stamps = [r["t"] for r in rows]
    assert stamps == want.t.tolist()
    assert [r["c"] for r in rows] == want.close.tolist()


def test_key_never_logged_even_when_requests_fail(
    sim: SimulatorServer, caplog: pytest.LogCaptureFixture, tmp_path: Path, pg_url: str
) -> None:
    gw = gateway(sim, attempts=2)
    with caplog.at_level(logging.DEBUG):
        backfill.fetch_aggs(gw.get_json, "AAPL", START, dt.date(2024, 2, 1))
        sim.set_faults(error_next=5, error_status=503)
        with pytest.raises(PolygonError) as err:
            backfill.fetch_aggs(gw.get_json, "AAPL", START, dt.date(2024, 2, 1))
        res = backfill.backfill_symbol(gw.get_json, Lake(str(tmp_path)), "MSFT", START, END)
    assert res.error is not None and "503" in res.error
    assert "GET" in caplog.text and "503" in caplog.text
    assert KEY not in caplog.text
    assert KEY not in str(err.value) and KEY not in repr(err.value)

    # the CLI at DEBUG in a subprocess: AAPL fails for good, MSFT is written, exit code 1
    sim.set_faults(reset=True)
    sim.set_faults(error_next=2, path_prefix="/v2/aggs/ticker/AAPL/")
    env = {
        **os.environ,
        "POLYGON_API_KEY": KEY,
        "POLYGON_REST_URL": sim.rest_url,
        "POLYGON_MAX_ATTEMPTS": "2",
        "DATABASE_URL": pg_url,
        "LAKE_URL": (tmp_path / "lake").as_uri(),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "dataflows.backfill", "--symbols", "AAPL,MSFT", "--start",
         "2024-01-02", "--end", "2024-03-01", "--workers", "1", "-v"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "failed: AAPL" in proc.stderr and "1 failed" in proc.stderr
    assert "urllib3" in proc.stderr  # DEBUG really was on
    assert KEY not in proc.stderr and KEY not in proc.stdout
    lake = Lake((tmp_path / "lake").as_uri())
    assert [e.key.split("/")[2] for e in lake.list(layout.DAILY)] == ["symbol=MSFT"]


def test_new_symbols_are_those_without_an_ingest_row(local_lake: Lake, pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        postgres.migrate(conn)
        conn.execute(
            "INSERT INTO symbol_metadata (symbol, active) VALUES ('META1', true), ('HELD', true)"
        )
        conn.execute(
            "INSERT INTO ingest_symbols (symbol, first_date, last_date)"
            " VALUES ('HELD', '2024-01-02', '2024-01-03')"
        )
        day = dt.date(2024, 1, 2)
        local_lake.write_bytes(layout.daily_fragment("LAKE1", day), b"x")
        local_lake.write_bytes(layout.daily_fragment("HELD", day), b"x")
        assert backfill.unbackfilled(conn, local_lake) == ["LAKE1", "META1"]


@pytest.fixture(scope="module")
def delisting_sim() -> Iterator[SimulatorServer]:
    """A market large enough to hold delisted tickers (the module's has none)."""
    market = Market(seed=7, n_symbols=40, start=START, end=END, history_start=calendar.EPOCH)
    with SimulatorServer(market, api_key=KEY) as s:
        yield s


def test_all_fetches_the_whole_market_once_and_a_rerun_resumes(
    delisting_sim: SimulatorServer, local_lake: Lake, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataflows import history

    sim = delisting_sim
    with psycopg.connect(pg_url, autocommit=True) as conn:
        postgres.migrate(conn)
        conn.execute("INSERT INTO symbol_metadata (symbol, active) VALUES ('AAPL', true)")
    for name, value in {
        "POLYGON_API_KEY": KEY, "POLYGON_REST_URL": sim.rest_url, "POLYGON_RPS": "1000",
        "DATABASE_URL": pg_url, "LAKE_URL": local_lake.url,
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    delisted = history.delisted_tickers(gateway(sim).get_json)
    assert delisted and "AAPL" not in delisted
    args = ["--all", "--end", END.isoformat(), "--workers", "2", "--no-progress"]

    assert backfill.main(args) == 0
    every = sorted({"AAPL", *delisted})
    held = local_lake.read_json(history.progress_key(calendar.EPOCH))
    assert held["done"] == every and held["start"] == calendar.EPOCH.isoformat()
    folders = [d.removeprefix("symbol=") for d in local_lake.list_dirs(layout.DAILY)]
    assert sorted(folders) == every

    # killed before the last symbol was recorded: the rerun fetches that one only
    local_lake.write_json(history.progress_key(calendar.EPOCH), {"done": every[:-1]})
    sim.reset_stats()
    assert backfill.main(args) == 0
    aggs = [p for p in sim.stats()["by_path"] if p.startswith("/v2/aggs/")]
    assert aggs == [backfill.aggs_path(every[-1], calendar.EPOCH, END)]
    assert local_lake.read_json(history.progress_key(calendar.EPOCH))["done"] == every

    sim.reset_stats()  # --restart fetches everything again, to the same files
    assert backfill.main([*args, "--restart"]) == 0
    assert len([p for p in sim.stats()["by_path"] if p.startswith("/v2/aggs/")]) == len(every)
    assert len(local_lake.list(layout.DAILY)) == len(every)
