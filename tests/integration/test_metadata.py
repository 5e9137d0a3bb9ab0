"""Metadata against the simulator over two days: a new listing appears, a delisting is marked."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from core import layout
from core.lake import Lake
from core.schemas import SYMBOL_META
from dataflows import metadata
from dataflows.backfill import Fetch
from dataflows.simulator.market import Market
from dataflows.simulator.server import SimulatorServer
from tests.services import simulator_fetch

pytestmark = pytest.mark.integration
START, END = dt.date(2024, 1, 2), dt.date(2024, 3, 28)
DAY1, DAY2 = dt.date(2024, 2, 1), dt.date(2024, 2, 21)


@pytest.fixture(scope="module")
def market() -> Market:
    return Market(seed=7, n_symbols=60, start=START, end=END)


@pytest.fixture(scope="module")
def sim(market: Market) -> Iterator[SimulatorServer]:
    with SimulatorServer(market) as s:
        yield s


def fetcher(sim: SimulatorServer) -> Fetch:
    return simulator_fetch(sim.rest_url)


def test_two_days_new_listing_and_delisting(
    sim: SimulatorServer, market: Market, pg_url: str, local_lake: Lake
) -> None:
    listed_day2 = [x for x in market.symbols() if DAY1 < x.list_date <= DAY2]
    gone_day2 = [x for x in market.symbols() if x.delist_date and DAY1 < x.delist_date <= DAY2]
    assert listed_day2 and gone_day2, "the market should evolve between the two days"
    new, gone = listed_day2[0], gone_day2[0]
    # small pages, so the list is paginated here too
    fetch = fetcher(sim)

    def small_pages(path: str, params: dict[str, Any]) -> dict[str, Any]:
        if path == metadata.TICKERS_PATH and "cursor" not in params:
            params = {**params, "limit": "7"}
        return fetch(path, params)

    first = metadata.run(small_pages, local_lake, pg_url, as_of=DAY1, workers=4)
    assert first.failed == {}
    active1 = [x for x in market.symbols(DAY1) if market.is_active(x, DAY1)]
    assert first.listed == len(active1) > 7
    assert len(first.new) == len(active1) and first.delisted == []

    second = metadata.run(small_pages, local_lake, pg_url, as_of=DAY2, workers=4)
    assert second.failed == {}
    assert new.ticker in second.new
    assert gone.ticker in second.delisted

    with psycopg.connect(pg_url) as conn:
        row = conn.execute(
            "SELECT active, delist_date, list_date, market_cap, sic_code, exchange, type"
            " FROM symbol_metadata WHERE symbol = %s",
            (gone.ticker,),
        ).fetchone()
        assert row is not None
        assert row[0] is False and row[1] == gone.delist_date and row[2] == gone.list_date
        assert isinstance(row[3], Decimal) and row[4] == gone.sic_code
        assert row[5] == gone.exchange and row[6] == gone.type
        row = conn.execute(
            "SELECT active, list_date, market_cap FROM symbol_metadata WHERE symbol = %s",
            (new.ticker,),
        ).fetchone()
        assert row is not None and row[0] is True and row[1] == new.list_date
        cap = market.market_cap(new.ticker, DAY2)
        assert (row[2] is None) == (cap is None)
        if cap is not None:
            assert float(row[2]) == pytest.approx(cap)
        n_db = conn.execute("SELECT count(*) FROM symbol_metadata").fetchone()

    snap = local_lake.read_table(layout.reference_tickers())
    assert snap.schema == SYMBOL_META
    assert n_db is not None and snap.num_rows == n_db[0]
    by_symbol = {r["symbol"]: r for r in snap.to_pylist()}
    assert by_symbol[gone.ticker]["active"] is False
    assert by_symbol[new.ticker]["active"] is True


def test_cli_and_empty_list_refused(sim: SimulatorServer, pg_url: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "POLYGON_API_KEY": "k",
        "POLYGON_REST_URL": sim.rest_url,
        "DATABASE_URL": pg_url,
        "LAKE_URL": (tmp_path / "lake").as_uri(),
        "BATCH_COUNTS_FILE": str(tmp_path / "counts.json"),
    }
    cmd = [sys.executable, "-m", "dataflows.metadata", "--date", DAY1.isoformat(), "--details"]
    proc = subprocess.run(
        [*cmd, "new"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "new listings" in proc.stderr
    counts = json.loads((tmp_path / "counts.json").read_text())
    assert counts["listed"] == counts["new"] > 0 and counts["failed"] == 0
    assert Lake((tmp_path / "lake").as_uri()).exists(layout.reference_tickers())

    def empty(path: str, params: dict[str, Any]) -> dict[str, Any]:
        return {"results": [], "status": "OK"}

    with pytest.raises(metadata.MetadataError, match="empty"):
        metadata.run(empty, None, pg_url)
