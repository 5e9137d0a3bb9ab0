"""dataflows.corporate_actions against the simulator, a real Postgres and a local lake."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pyarrow.parquet as pq
import pytest
from psycopg import sql

from core import adjustments as adj
from core import layout
from core.lake import Lake
from core.schemas import DIVIDENDS, SPLITS
from dataflows import corporate_actions as ca
from dataflows.backfill import Fetch
from dataflows.simulator.actions import CorporateActions
from dataflows.simulator.market import Market
from dataflows.simulator.server import SimulatorServer
from tests.services import simulator_fetch

pytestmark = pytest.mark.integration
START, END = dt.date(2024, 1, 2), dt.date(2024, 6, 28)


@pytest.fixture(scope="module")
def market() -> Market:
    return Market(seed=7, n_symbols=60, start=START, end=END)


@pytest.fixture()
def sim(market: Market) -> Iterator[SimulatorServer]:
    with SimulatorServer(market) as s:
        yield s


def fetcher(sim: SimulatorServer) -> Fetch:
    return simulator_fetch(sim.rest_url)


def _count(pg_url: str, table: str) -> int:
    with psycopg.connect(pg_url) as conn:
        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
        row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def test_the_simulated_market_holds_every_kind_of_action(market: Market) -> None:
    kinds = {s.adjustment_type for s in market.splits() if s.execution_date >= START}
    assert kinds == {"forward_split", "reverse_split", "stock_dividend"}
    tickers = [s.ticker for s in market.splits() if s.execution_date >= START]
    assert any(tickers.count(t) >= 2 for t in tickers), "a symbol with two splits"
    divs = CorporateActions(market).dividends()
    assert {d.distribution_type for d in divs} == {
        "recurring", "special", "supplemental", "irregular", "unknown",
    }  # fmt: skip
    assert any(d.currency != "USD" for d in divs)
    # the simulated bars follow the splits: a raw jump of about the ratio on the execution date
    for s in market.splits():
        if s.execution_date <= START:
            continue
        before = market.last_close(s.ticker, s.execution_date - dt.timedelta(days=1))
        on = market.daily(s.ticker, s.execution_date, s.execution_date, inject=False).close[0]
        assert before is not None
        assert 0.7 < (before / on) / (s.split_to / s.split_from) < 1.4, s


def test_fetch_store_and_rerun_idempotently(
    sim: SimulatorServer, market: Market, pg_url: str, local_lake: Lake
) -> None:
    sim.set_faults(rate_limit_next=2, retry_after=0, path_prefix="/stocks/v1")
    fetch = fetcher(sim)
    first = ca.run(fetch, local_lake, pg_url, page_limit=7)  # small pages: next_url is followed
    truth = CorporateActions(market)
    assert first.splits is not None and first.dividends is not None
    assert len(first.splits.new) == len(market.splits()) == _count(pg_url, "splits")
    assert len(first.dividends.new) == len(truth.dividends()) == _count(pg_url, "dividends")
    assert sim.stats()["by_route"]["stock_splits"] > 2  # pages, and the 429s retried
    splits = pq.read_table(local_lake.path(layout.reference_splits()))
    assert splits.schema.equals(SPLITS) and splits.num_rows == len(market.splits())
    divs = pq.read_table(local_lake.path(layout.reference_dividends()))
    assert divs.schema.equals(DIVIDENDS)
    one = market.splits()[0]
    book = adj.split_book(local_lake)
    stored = next(s for s in book.of(one.ticker) if s.execution_date == one.execution_date)
    assert (stored.split_from, stored.split_to) == (one.split_from, one.split_to)
    assert stored.vendor_factor == pytest.approx(truth.split_factor(one), rel=1e-12)
    # the vendor's factors agree with ours, except where the contract's C (the raw close before
    # the ex-date) is in another share basis than the amount: a dividend on a split's day
    assert {(d.kind, d.symbol) for d in first.check.disagreements} <= {
        ("dividend", s.ticker) for s in market.splits()
    }
    before = local_lake.read_bytes(layout.reference_splits())

    again = ca.run(fetch, local_lake, pg_url, page_limit=7)
    assert again.splits is not None and again.dividends is not None
    assert (again.splits.new, again.splits.changed, again.splits.withdrawn) == ([], [], [])
    assert (again.dividends.new, again.dividends.changed, again.dividends.withdrawn) == ([], [], [])
    assert local_lake.read_bytes(layout.reference_splits()) == before


def test_changed_and_withdrawn_actions_are_updated_not_duplicated(
    sim: SimulatorServer, market: Market, pg_url: str, local_lake: Lake
) -> None:
    fetch = fetcher(sim)
    ca.run(fetch, local_lake, pg_url)
    truth = CorporateActions(market)
    split, gone = market.splits()[0], truth.dividends()[0]
    sim.edit_actions(
        {
            split.id: {"split_to": split.split_to * 2, "historical_adjustment_factor": 0.123},
            gone.id: None,
        }
    )
    out = ca.run(fetch, local_lake, pg_url)
    assert out.splits is not None and out.dividends is not None
    assert out.splits.changed == [(split.ticker, split.execution_date)]
    assert out.dividends.withdrawn == [(gone.ticker, gone.ex_dividend_date, gone.distribution_type)]
    assert _count(pg_url, "splits") == len(market.splits())
    assert _count(pg_url, "dividends") == len(truth.dividends()) - 1
    assert out.symbols_changed() == [split.ticker]
    assert split.ticker in out.check.symbols()  # the edited vendor factor is reported
    book = adj.split_book(local_lake)
    assert any(s.split_to == split.split_to * 2 for s in book.of(split.ticker))


def _held(pg_url: str, table: str) -> int:
    """Rows in ``table``; 0 when the table does not exist."""
    with psycopg.connect(pg_url) as conn:
        row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    return _count(pg_url, table) if row is not None and row[0] else 0


def test_a_dry_run_reports_what_a_run_would_change_and_writes_nothing(
    sim: SimulatorServer, market: Market, pg_url: str, local_lake: Lake
) -> None:
    """The same counts and check as the run it previews; no table, lake file or quarantine."""
    fetch = fetcher(sim)
    bad = market.splits()[1]
    sim.edit_actions({bad.id: {"adjustment_type": "spin_off"}})
    preview = ca.run(fetch, local_lake, pg_url, dry_run=True)
    assert preview.dry_run and preview.counts()["dry_run"] is True
    assert preview.splits is not None and preview.dividends is not None
    assert len(preview.splits.new) == len(market.splits()) - 1 and preview.rejected == 1
    assert _held(pg_url, "splits") == 0 and _held(pg_url, "dividends") == 0
    assert not local_lake.exists(layout.reference_splits())
    assert preview.quarantined == [] and preview.lake_keys == []
    done = ca.run(fetch, local_lake, pg_url)
    assert done.splits is not None and done.splits.new == preview.splits.new
    assert done.check.symbols() == preview.check.symbols()
    before = local_lake.read_bytes(layout.reference_splits())
    split = market.splits()[0]
    sim.edit_actions({split.id: {"split_to": split.split_to * 3}})
    again = ca.run(fetch, local_lake, pg_url, dry_run=True)
    assert again.splits is not None and again.splits.changed == [
        (split.ticker, split.execution_date)
    ]
    assert local_lake.read_bytes(layout.reference_splits()) == before
    book = adj.split_book(local_lake)
    assert all(s.split_to != split.split_to * 3 for s in book.of(split.ticker))
    still = ca.run(fetch, local_lake, pg_url, dry_run=True)  # nothing was written by the last
    assert still.splits is not None and still.splits.changed == again.splits.changed


def test_scoped_runs_touch_only_their_scope(
    sim: SimulatorServer, market: Market, pg_url: str, local_lake: Lake
) -> None:
    fetch = fetcher(sim)
    ca.run(fetch, local_lake, pg_url)
    split = market.splits()[-1]
    sim.edit_actions({s.id: None for s in market.splits()})  # the vendor withdraws every split
    out = ca.run(fetch, local_lake, pg_url, symbols=[split.ticker], since=split.execution_date)
    assert out.splits is not None
    assert out.splits.withdrawn == [(split.ticker, split.execution_date)]
    assert _count(pg_url, "splits") == len(market.splits()) - 1


def test_bad_objects_are_quarantined_with_a_reason(
    sim: SimulatorServer, market: Market, pg_url: str, local_lake: Lake
) -> None:
    split = market.splits()[0]
    sim.edit_actions({split.id: {"adjustment_type": "spin_off"}})
    out = ca.run(fetcher(sim), local_lake, pg_url)
    assert out.rejected == 1 and out.quarantined
    q = local_lake.read_table(out.quarantined[0])
    assert "adjustment_type 'spin_off'" in q["reason"][0].as_py()
    assert split.id in q["payload"][0].as_py()


def test_cli_help_and_usage_errors(tmp_path: Path) -> None:
    env = {**os.environ, "LAKE_URL": tmp_path.as_uri()}
    ok = subprocess.run(
        [sys.executable, "-m", "dataflows.corporate_actions", "--help"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert ok.returncode == 0 and "--since" in ok.stdout and "--dry-run" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "dataflows.corporate_actions", "--since", "yesterday"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert bad.returncode == 2


def test_a_split_moved_before_the_scope_is_not_held_twice(
    sim: SimulatorServer, market: Market, pg_url: str, local_lake: Lake
) -> None:
    fetch = fetcher(sim)
    ca.run(fetch, local_lake, pg_url)
    split = market.splits()[-1]
    moved = split.execution_date + dt.timedelta(days=7)
    # the vendor corrects the date (same id); a --since run from the new date does not reach
    # the old one, yet the id says it is the same split
    sim.edit_actions({split.id: {"execution_date": moved.isoformat()}})
    ca.run(fetch, local_lake, pg_url, since=moved)
    held = [s for s in adj.split_book(local_lake).of(split.ticker) if s.id == split.id]
    assert [s.execution_date for s in held] == [moved]
    assert _count(pg_url, "splits") == len(market.splits())


def test_an_unreadable_object_keeps_the_action_held_for_its_key(
    sim: SimulatorServer, market: Market, pg_url: str, local_lake: Lake
) -> None:
    fetch = fetcher(sim)
    ca.run(fetch, local_lake, pg_url)
    split = market.splits()[0]
    sim.edit_actions({split.id: {"split_to": "four"}})
    out = ca.run(fetch, local_lake, pg_url)
    assert out.rejected == 1 and out.splits is not None
    assert out.splits.withdrawn == []  # rejected is not withdrawn: the last good one stays
    assert _count(pg_url, "splits") == len(market.splits())
    assert out.symbols_changed() == []
