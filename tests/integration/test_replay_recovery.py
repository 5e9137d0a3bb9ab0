"""Crash safety: SIGKILL the replay (Bytewax recovery on) mid-run, rerun, compare to a clean run."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from pydantic import SecretStr

from core import calendar
from core.lake import Lake
from core.layout import DAILY
from core.settings import ReplaySettings
from dataflows.replay import run
from dataflows.simulator.market import Market
from dataflows.simulator.server import SimulatorServer
from tests.conftest import with_search_path

pytestmark = [pytest.mark.integration, pytest.mark.slow]
FIRST, LAST = dt.date(2025, 2, 3), dt.date(2025, 3, 7)
SESSIONS = calendar.sessions_between(FIRST, LAST)
GROUPED = "/v2/aggs/grouped/locale/us/market/stocks/"
COLS = "symbol, date, open, high, low, close, volume, vwap, transactions, source"


@pytest.fixture()
def other_pg_url(postgres_server_url: str) -> Iterator[str]:
    """A second private schema, for the uninterrupted reference run."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield with_search_path(postgres_server_url, schema)
    finally:
        with psycopg.connect(postgres_server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def complete(url: str) -> set[dt.date]:
    with psycopg.connect(url) as conn:
        try:
            rows = conn.execute(
                "SELECT session FROM ingest_sessions WHERE status = 'complete'"
            ).fetchall()
        except psycopg.errors.UndefinedTable:
            return set()
    return {r[0] for r in rows}


def lake_state(lake: Lake) -> dict[str, list[tuple[Any, ...]]]:
    """Every bronze file and its rows, without ingested_at (a rerun stamps its own)."""
    out = {}
    for e in lake.list(DAILY, suffix=".parquet"):
        t = lake.read_table(e.key).drop_columns(["ingested_at"])
        out[e.key] = [tuple(r.values()) for r in t.to_pylist()]
    return out


def db_state(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            sql.SQL("SELECT {} FROM raw_ohlcv ORDER BY symbol, date").format(sql.SQL(COLS))
        ).fetchall()


def test_sigkill_mid_run_then_rerun_equals_a_clean_run(
    tmp_path: Path, pg_url: str, other_pg_url: str
) -> None:
    market = Market(seed=9, n_symbols=40, start=FIRST, end=LAST)
    killed_lake, clean_lake = Lake(str(tmp_path / "killed")), Lake(str(tmp_path / "clean"))
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    py = sys.executable
    subprocess.run([py, "-m", "bytewax.recovery", str(recovery), "1"], check=True)
    with SimulatorServer(market, host="127.0.0.1", port=0) as sim:
        env = {
            **os.environ,
            "LAKE_URL": killed_lake.url,
            "DATABASE_URL": pg_url,
            "POLYGON_REST_URL": sim.rest_url,
            "POLYGON_RPS": "1000",
            "REPLAY_START": FIRST.isoformat(),
            "REPLAY_END": LAST.isoformat(),
            "REPLAY_CHUNK_SESSIONS": "1",
            "REPLAY_FETCH_CONCURRENCY": "1",
        }
        env.pop("POLYGON_API_KEY", None)
        cmd = [
            py,
            "-m",
            "bytewax.run",
            "dataflows.replay:flow",
            "-r",
            str(recovery),
            "-s",
            "1",
            "-b",
            "1",
        ]
        sim.set_faults(delay=0.3)  # slow answers, so the kill lands mid-run
        log = tmp_path / "killed.log"
        with log.open("w") as err:
            proc = subprocess.Popen(cmd, env=env, stderr=err)
            try:
                deadline = time.monotonic() + 120
                while len(complete(pg_url)) < 4 and time.monotonic() < deadline:
                    if proc.poll() is not None:
                        pytest.fail(f"the replay ended before the kill: {log.read_text()[-2000:]}")
                    time.sleep(0.1)
                proc.send_signal(signal.SIGKILL)
            finally:
                proc.kill()
                proc.wait()
        done_before = complete(pg_url)
        assert 4 <= len(done_before) < len(SESSIONS)

        sim.set_faults(reset=True)
        sim.reset_stats()
        rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        asked = {
            dt.date.fromisoformat(p.removeprefix(GROUPED))
            for p in sim.stats()["by_path"]
            if p.startswith(GROUPED)
        }
        assert asked and not asked & done_before  # completed sessions are not requested again
        assert asked | done_before == set(SESSIONS)

        clean = ReplaySettings(
            lake_url=clean_lake.url,
            database_url=SecretStr(other_pg_url),
            polygon_api_key=None,
            polygon_rest_url=sim.rest_url,
            polygon_rps=1000.0,
            replay_start=FIRST,
            replay_end=LAST,
            replay_chunk_sessions=1,
        )
        assert run(clean).ok

    assert complete(pg_url) == complete(other_pg_url) == set(SESSIONS)
    killed, reference = lake_state(killed_lake), lake_state(clean_lake)
    assert list(killed) == list(reference) and killed == reference
    assert db_state(pg_url) == db_state(other_pg_url)
