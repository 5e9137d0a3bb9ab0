"""Gaps heal: the live flow on the simulator's WebSocket with its disconnect fault on records
every connect, reconnect and stop in ``live_gaps`` (real Postgres); ``dataflows.heal`` fills them
from the simulator's REST minute aggregates (the real gateway, every ``next_url`` page); after
``consolidate --minutes`` every minute of the run equals the truth folded in the test from the
trades the simulator's market holds.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest
from bytewax.testing import TestingSink

from batch.engine import minutes
from core import layout
from core.lake import Lake
from core.settings import PolygonSettings
from core.stores import gaps as gap_store
from core.stores import postgres
from dataflows.connectors.gap_sink import GapSink
from dataflows.connectors.minute_sink import MinuteBarSink
from dataflows.connectors.polygon import PolygonGateway
from dataflows.connectors.quarantine_sink import QuarantineSink
from dataflows.heal import heal
from dataflows.live import build_live_flow
from dataflows.simulator import Market
from dataflows.simulator.server import SimulatorServer
from tests.integration.test_live import run_for, ws_source
from tests.tape_truth import truth_bars

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DAY = dt.date(2025, 1, 3)


@pytest.fixture(scope="module")
def market() -> Market:
    return Market(seed=11, n_symbols=6, start=dt.date(2025, 1, 2), end=dt.date(2025, 1, 10))


@pytest.fixture()
def sim(market: Market) -> Iterator[SimulatorServer]:
    with SimulatorServer(market, speed=60.0, replay_day=DAY, ws_interval=0.05) as s:
        yield s


def _truth(market: Market, lo: dt.datetime, hi: dt.datetime) -> dict[tuple[str, int], Any]:
    events = market.trades(DAY, lo, hi).to_events()
    return truth_bars(events)


def test_disconnects_are_recorded_and_healed_to_the_truth(
    sim: SimulatorServer, market: Market, local_lake: Lake, pg_url: str
) -> None:
    sim.set_faults(ws_disconnect_after=70)
    stop = threading.Event()
    flow = build_live_flow(
        ws_source(sim, stop),
        bars=MinuteBarSink(local_lake, flush_after=0),
        live=TestingSink([]),
        quarantine=QuarantineSink(local_lake),
        gaps=GapSink(pg_url),
    )
    run_for(flow, stop, 7.0)
    assert sim.stats()["ws"]["disconnects"] >= 1

    with postgres.connect(pg_url, autocommit=True) as conn:
        recorded = gap_store.open_gaps(conn)
        reasons = {g.reason for g in recorded}
        assert {"connect", "reconnect", "stop"} <= reasons, reasons
        assert all(g.symbol is None for g in recorded)

        before = minutes.merge(_read(local_lake))
        assert any(before["partial"].to_pylist()), "a disconnect left no partial minute"

        gateway = PolygonGateway(PolygonSettings(polygon_rest_url=sim.rest_url))
        try:
            report = heal(local_lake, conn, gateway.get_json)
            again = heal(local_lake, conn, gateway.get_json)  # nothing left: a no-op
        finally:
            gateway.close()
        assert report.failed == {} and report.healed == len(recorded) and report.bars > 0
        assert again.gaps == 0 and again.fetches == 0
        assert gap_store.open_gaps(conn) == []
        healed = conn.execute("SELECT count(*) FROM live_gaps WHERE healed_at IS NOT NULL")
        assert healed.fetchone() == (len(recorded),)

    minutes.consolidate_session(local_lake, DAY)
    got = local_lake.read_table(layout.minute_consolidated(DAY)).to_pylist()
    first = min(r["start"] for r in got)
    last = max(r["start"] for r in got)
    want = _truth(market, first, last + dt.timedelta(minutes=1))
    have = {(r["symbol"], int(r["start"].timestamp() * 1000)): r for r in got}
    assert set(have) == set(want)
    wrong = []
    for key, w in want.items():
        r = have[key]
        values = (r["open"], r["high"], r["low"], r["close"], r["volume"], r["trades"])
        expected = (w["open"], w["high"], w["low"], w["close"], w["volume"], w["trades"])
        if values != expected or r["vwap"] != pytest.approx(w["vwap"], abs=5e-5):
            wrong.append((key, values, expected))
    assert not wrong, f"{len(wrong)} of {len(want)} minutes differ, e.g. {wrong[:2]}"
    assert not any(r["partial"] for r in got)  # every cut minute was replaced by REST
    sources = [r["source"] for r in got]
    assert "rest" in sources and "live" in sources, sources


def _read(lake: Lake) -> pa.Table:
    keys = [e.key for e in lake.list(layout.MINUTE, suffix=".parquet")]
    return pa.concat_tables([lake.read_table(k) for k in keys])  # no hive inference


def test_heal_cli_dry_run_and_usage(sim: SimulatorServer, local_lake: Lake, pg_url: str) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": pg_url,
        "POLYGON_REST_URL": sim.rest_url,
        "LAKE_URL": local_lake.url,
    }
    env.pop("POLYGON_API_KEY", None)
    start = dt.datetime(2025, 1, 3, 15, 0, tzinfo=dt.UTC)
    with postgres.connect(pg_url, autocommit=True) as conn:
        postgres.migrate(conn)
        gap_store.record(conn, [("AAPL", start, start + dt.timedelta(minutes=3), "late")])
    run = [sys.executable, "-m", "dataflows.heal"]
    dry = subprocess.run([*run, "--dry-run"], env=env, capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    assert "would fetch AAPL 2025-01-03" in dry.stderr and "1 fetches" in dry.stderr
    bad = subprocess.run([*run, "--symbols", "a/b"], env=env, capture_output=True, timeout=60)
    assert bad.returncode == 2 and b"invalid symbol" in bad.stderr
    done = subprocess.run([*run], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "1 gaps healed" in done.stderr
    rows = _read(local_lake).to_pylist()
    assert [r["source"] for r in rows] == ["rest"] * 3 and {r["symbol"] for r in rows} == {"AAPL"}
