"""The replay flow on real services: simulator (in-process HTTP), Postgres and a local lake."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pydantic import SecretStr

from core.lake import Lake
from core.layout import DAILY
from core.schemas import BRONZE_DAILY
from core.settings import ReplaySettings
from dataflows.replay import run
from dataflows.simulator.market import Market
from dataflows.simulator.server import SimulatorServer

pytestmark = pytest.mark.integration
FIRST, LAST = dt.date(2025, 4, 14), dt.date(2025, 4, 25)  # Good Friday 2025-04-18 inside
HOLIDAY = dt.date(2025, 4, 18)
BAD_DAY = dt.date(2025, 4, 15)
NOW = dt.datetime(2025, 5, 1, 12, tzinfo=dt.UTC)
SESSIONS = [
    FIRST + dt.timedelta(days=i)
    for i in range(12)
    if (FIRST + dt.timedelta(days=i)).weekday() < 5 and FIRST + dt.timedelta(days=i) != HOLIDAY
]
PRICE_COLS = ("symbol", "date", "open", "high", "low", "close", "volume", "vwap", "transactions")


@pytest.fixture(scope="module")
def market() -> Market:
    return Market(seed=5, n_symbols=30, start=FIRST, end=LAST, bad_rows={BAD_DAY: "all"})


@pytest.fixture(scope="module")
def server(market: Market) -> Iterator[SimulatorServer]:
    with SimulatorServer(market, host="127.0.0.1", port=0) as s:
        yield s


@pytest.fixture()
def sim(server: SimulatorServer) -> SimulatorServer:
    server.set_faults(reset=True)
    server.reset_stats()
    return server


def settings(sim: SimulatorServer, lake: Lake, pg_url: str, **over: Any) -> ReplaySettings:
    values: dict[str, Any] = {
        "lake_url": lake.url,
        "database_url": SecretStr(pg_url),
        "polygon_api_key": None,
        "polygon_rest_url": sim.rest_url,
        "polygon_rps": 1000.0,
        "replay_start": FIRST,
        "replay_end": LAST,
        "replay_history_start": FIRST,
        "cache_window_days": 100_000,
        **over,
    }
    return ReplaySettings(**values)


def expected(market: Market, days: list[dt.date]) -> pa.Table:
    """The simulator's own clean rows for ``days`` (defective rows removed)."""
    parts = []
    for d in days:
        t = market.grouped(d, False).to_arrow()
        if "defect" in t.column_names:
            t = t.filter(pc.equal(t["defect"], ""))
        parts.append(t.select(list(PRICE_COLS)))
    return pa.concat_tables(parts).sort_by([("symbol", "ascending"), ("date", "ascending")])


def same(got: pa.Table, want: pa.Table) -> bool:
    """Equal rows and types (nullability aside)."""
    return bool(got.equals(want.cast(got.schema)))


def lake_rows(lake: Lake) -> pa.Table:
    t = pa.concat_tables(lake.read_table(e.key) for e in lake.list(DAILY, suffix=".parquet"))
    return t.select(list(PRICE_COLS)).sort_by([("symbol", "ascending"), ("date", "ascending")])


def db_rows(pg_url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(pg_url) as conn:
        return conn.execute(
            "SELECT symbol, date, open, high, low, close, volume, vwap, transactions"
            " FROM raw_ohlcv ORDER BY symbol, date"
        ).fetchall()


def ledger(pg_url: str) -> dict[dt.date, tuple[str, int, int, int]]:
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "SELECT session, status, rows, quarantined, attempts FROM ingest_sessions"
        ).fetchall()
    return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}


def grouped_paths(sim: SimulatorServer) -> dict[str, int]:
    return {p: n for p, n in sim.stats()["by_path"].items() if "/grouped/" in p}


def test_replay_writes_the_simulators_data_once(
    sim: SimulatorServer, market: Market, local_lake: Lake, pg_url: str
) -> None:
    report = run(settings(sim, local_lake, pg_url), now=NOW)
    assert report.ok and sorted(report.complete) == SESSIONS
    paths = grouped_paths(sim)
    assert len(paths) == len(SESSIONS) and all(n == 1 for n in paths.values())
    assert not any(HOLIDAY.isoformat() in p for p in paths)  # holidays never requested

    want = expected(market, SESSIONS)
    got = lake_rows(local_lake)
    assert same(got, want)
    files = local_lake.list(DAILY, suffix=".parquet")
    symbols = {e.key.split("/")[2] for e in files}
    assert len(files) == len(symbols)  # one range= file per symbol for the multi-session run
    assert sum("/range=" in e.key for e in files) >= len(files) - 2
    t = local_lake.read_table(files[0].key)
    assert t.schema.equals(BRONZE_DAILY, check_metadata=False)

    db = db_rows(pg_url)
    assert db == [tuple(r.values()) for r in want.to_pylist()]  # double precision: exact
    assert any(round(r[7] * 100, 6) % 1 for r in db if r[7] is not None)  # sub-penny vwap

    book = ledger(pg_url)
    assert {d: v[0] for d, v in book.items()} == dict.fromkeys(SESSIONS, "complete")
    assert book[BAD_DAY][2] == 5  # one quarantined row per defect kind

    q = local_lake.read_table(f"quarantine/rest/{BAD_DAY}/part-grouped-daily.parquet")
    reasons = " | ".join(q["reason"].to_pylist())
    for reason in (
        "missing close",
        "open is not a positive finite price",
        "high < low",
        "date is not an XNYS session",
        "invalid symbol",
    ):
        assert reason in reasons

    with psycopg.connect(pg_url) as conn:
        spans = conn.execute("SELECT count(*), min(first_date), max(last_date) FROM ingest_symbols")
        n, first, last = spans.fetchone() or (0, None, None)
    assert n == len(symbols) and first == FIRST and last == LAST

    sim.reset_stats()
    again = run(settings(sim, local_lake, pg_url), now=NOW)
    assert again.ok and again.requested == 0
    assert grouped_paths(sim) == {}  # a complete ledger requests nothing


def test_one_session_writes_date_fragments(
    sim: SimulatorServer, market: Market, local_lake: Lake, pg_url: str
) -> None:
    day = SESSIONS[-1]
    report = run(settings(sim, local_lake, pg_url), sessions=[day, HOLIDAY], now=NOW)
    assert report.ok and report.complete == [day]
    keys = [e.key for e in local_lake.list(DAILY, suffix=".parquet")]
    assert keys and all(k.endswith(f"/date={day}.parquet") for k in keys)
    assert same(lake_rows(local_lake), expected(market, [day]))


def test_empty_day_is_retried_and_never_complete(
    sim: SimulatorServer, local_lake: Lake, pg_url: str
) -> None:
    day = SESSIONS[2]
    sim.set_faults(empty_days=[day.isoformat()])
    first = run(settings(sim, local_lake, pg_url), now=NOW)
    assert first.ok and first.empty == [day] and day not in first.complete
    assert ledger(pg_url)[day][0] == "empty"
    sim.set_faults(reset=True)
    sim.reset_stats()
    second = run(settings(sim, local_lake, pg_url), now=NOW)
    assert second.complete == [day]
    assert list(grouped_paths(sim)) == [f"/v2/aggs/grouped/locale/us/market/stocks/{day}"]
    assert ledger(pg_url)[day][0] == "complete"


def test_faults_are_retried_and_succeed(
    sim: SimulatorServer, market: Market, local_lake: Lake, pg_url: str
) -> None:
    sim.set_faults(rate_limit_next=1, retry_after=1, error_next=2, error_status=503)
    s = settings(sim, local_lake, pg_url, polygon_timeout_s=1.0, replay_fetch_concurrency=2)
    report = run(s, sessions=SESSIONS[:3], now=NOW)
    assert report.ok and sorted(report.complete) == SESSIONS[:3]
    sim.set_faults(reset=True)
    sim.set_faults(delay=2.0, delay_next=1)  # one answer slower than the timeout
    report = run(s, sessions=SESSIONS[3:5], now=NOW)
    assert report.ok and sorted(report.complete) == SESSIONS[3:5]
    book = ledger(pg_url)
    assert sum(v[3] for v in book.values()) >= len(SESSIONS[:5]) + 4  # retries were counted
    assert same(lake_rows(local_lake), expected(market, SESSIONS[:5]))


def test_persistent_5xx_fails_the_run_with_a_summary(
    sim: SimulatorServer, local_lake: Lake, pg_url: str
) -> None:
    """Through the fixed entry point, configured only by the environment."""
    bad = SESSIONS[1]
    sim.set_faults(
        error_next=1000,
        error_status=502,
        path_prefix=f"/v2/aggs/grouped/locale/us/market/stocks/{bad}",
    )
    env = {
        **os.environ,
        "LAKE_URL": local_lake.url,
        "DATABASE_URL": pg_url,
        "POLYGON_REST_URL": sim.rest_url,
        "REPLAY_START": FIRST.isoformat(),
        "REPLAY_END": LAST.isoformat(),
        "POLYGON_MAX_ATTEMPTS": "3",
        "POLYGON_RPS": "1000",
    }
    env.pop("POLYGON_API_KEY", None)
    done = subprocess.run(
        [sys.executable, "-m", "bytewax.run", "dataflows.replay:flow"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert f"{len(SESSIONS) - 1} complete" in done.stderr and "1 failed" in done.stderr
    assert "HTTP 502" in done.stderr
    book = ledger(pg_url)
    assert book[bad][0] == "failed" and book[bad][3] == 3
    assert sum(1 for v in book.values() if v[0] == "complete") == len(SESSIONS) - 1
    assert grouped_paths(sim)[f"/v2/aggs/grouped/locale/us/market/stocks/{bad}"] == 3


def test_no_source_configured_is_a_clear_error(local_lake: Lake, pg_url: str) -> None:
    from dataflows.connectors.polygon import PolygonConfigError

    s = ReplaySettings(
        lake_url=local_lake.url,
        database_url=SecretStr(pg_url),
        polygon_api_key=None,
        polygon_secret_id=None,
        polygon_rest_url=None,
    )
    with pytest.raises(PolygonConfigError, match=r"python -m dataflows\.simulator"):
        run(s)


def test_missing_sessions_waits_for_the_settle_delay(pg_url: str) -> None:
    from core import calendar
    from core.stores.postgres import migrate
    from dataflows.replay import missing_sessions

    day = dt.date(2025, 4, 17)  # Thursday before Good Friday
    close = calendar.session_close(day)
    settle = dt.timedelta(minutes=60)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        migrate(conn)
        before = missing_sessions(conn, day, LAST, close + settle / 2, settle=settle)
        after = missing_sessions(conn, day, LAST, close + settle, settle=settle)
        assert before == [] and after == [day]
        later = missing_sessions(conn, FIRST, LAST, NOW, settle=settle)
        assert later == SESSIONS and HOLIDAY not in later


def test_two_workers_and_chunks_write_the_same_rows(
    sim: SimulatorServer, market: Market, local_lake: Lake, pg_url: str
) -> None:
    from bytewax.testing import cluster_main

    from dataflows.replay import prepare

    s = settings(sim, local_lake, pg_url, replay_partitions=3, replay_chunk_sessions=2)
    replay = prepare(s, now=NOW)
    cluster_main(replay.flow, [], 0, worker_count_per_proc=2)  # type: ignore[no-untyped-call]
    assert replay.report.ok and sorted(replay.report.complete) == SESSIONS
    assert same(lake_rows(local_lake), expected(market, SESSIONS))
    assert len(db_rows(pg_url)) == lake_rows(local_lake).num_rows
    assert len(grouped_paths(sim)) == len(SESSIONS)


def test_cli_redacts_the_key_in_debug_logs(
    sim: SimulatorServer, local_lake: Lake, pg_url: str
) -> None:
    """``python -m dataflows.replay`` installs redaction: with DEBUG logs the key never shows."""
    key = "sk-replay-9f8e7d6c5b4a"
    probe = (
        "import logging, os, sys\n"
        "from dataflows.replay import main\n"
        "code = main(sys.argv[1:])\n"
        "logging.getLogger('probe').warning('key in a log line: %s', os.environ['POLYGON_API_KEY'])\n"
        "sys.exit(code)\n"
    )
    env = {
        **os.environ,
        "LAKE_URL": local_lake.url,
        "DATABASE_URL": pg_url,
        "POLYGON_API_KEY": key,
        "POLYGON_REST_URL": sim.rest_url,
        "POLYGON_RPS": "1000",
    }
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            probe,
            "--sessions",
            SESSIONS[0].isoformat(),
            "--log-level",
            "DEBUG",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert " DEBUG " in done.stderr  # DEBUG records were emitted
    assert "key in a log line: " in done.stderr  # the probe's line was logged, scrubbed
    assert key not in done.stderr and key not in done.stdout
