"""Corporate actions end to end against a reference written from the contract alone.

The simulator's actions are edited into the awkward cases (a 1-for-10 reverse split, a stock
dividend, two splits of one symbol, a split on a non-session day, splits before a symbol's first
row and after its last, a dividend on a split day, one before the first row, one at least the
close, one not in USD). ``python -m dataflows.corporate_actions`` fetches them, the batch jobs
build silver, and ``/v1/bars`` serves them from Postgres and the lake; every number is checked
against S(d), T(d) and the Fibonacci grouping computed here with pandas and exchange_calendars,
not with the project's own code.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final, cast

import exchange_calendars as xcals
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api.main import create_app
from batch import consolidate, resample
from core import layout
from core.lake import Lake
from core.settings import ApiSettings
from core.stores import postgres
from dataflows import corporate_actions as ca
from dataflows.simulator.actions import CorporateActions
from dataflows.simulator.market import Market
from dataflows.simulator.server import SimulatorServer
from tests.batch_support import Row, snapshot, table_of, write_fragment
from tests.services import simulator_fetch

pytestmark = pytest.mark.integration
KEY: Final = "k-reference"
HEADERS: Final = {"X-API-Key": KEY}
INTERVALS: Final = (3, 5, 8, 13, 21, 34)
REL: Final = 1e-12


# -- the contract, written out -----------------------------------------------------------------
@cache
def xnys() -> list[dt.date]:
    cal = xcals.get_calendar("XNYS", start="1962-01-02", end="2030-12-31")
    return [d.date() for d in cal.sessions]


D: Final = [d for d in xnys() if dt.date(2024, 1, 2) <= d <= dt.date(2024, 6, 28)]


@dataclass(frozen=True)
class S:
    symbol: str
    day: dt.date
    split_from: float
    split_to: float
    kind: str = "forward_split"


@dataclass(frozen=True)
class Dv:
    symbol: str
    ex: dt.date
    cash: float
    currency: str = "USD"
    kind: str = "recurring"


def _saturday_after(day: dt.date) -> dt.date:
    out = day + dt.timedelta(days=1)
    while out.weekday() != 5:
        out += dt.timedelta(days=1)
    return out


SPLITS: Final = (
    S("REV", D[40], 10.0, 1.0, "reverse_split"),
    S("STK", D[50], 1.0, 1.05, "stock_dividend"),
    S("TWO", D[30], 1.0, 2.0),
    S("TWO", D[80], 1.0, 3.0),
    S("WKD", _saturday_after(D[60]), 1.0, 4.0),
    S("EDG", D[5], 1.0, 2.0),  # before EDG's first row (D[20]): moves nothing
    S("EDG", D[110], 1.0, 5.0),  # after its last row (D[99]): moves every row
    S("DIV", D[50], 1.0, 4.0),
)
DIVIDENDS: Final = (
    Dv("DIV", D[50], 0.25),  # on the split day, declared in the new basis
    Dv("DIV", D[0], 0.4, kind="special"),  # on the first row: no row before it
    Dv("DIV", D[70], 10_000.0, kind="irregular"),  # at least the close: skipped
    Dv("DIV", D[90], 0.5, currency="CAD"),  # not USD: not in T(d)
    Dv("DIV", D[100], 0.3),
    Dv("DIV", D[100], 0.1, kind="supplemental"),  # same ex-date, another type
)
FIRST_LAST: Final = {"EDG": (20, 100)}
SYMBOLS: Final = ("DIV", "EDG", "PLN", "REV", "STK", "TWO", "WKD")


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return cast(list[dict[str, Any]], frame.to_dict("records"))


def row_of(r: dict[str, Any]) -> Row:
    return Row(r["symbol"], r["date"], r["open"], r["high"], r["low"], r["close"], r["volume"])


def s_factor(symbol: str, day: dt.date, splits: Sequence[S]) -> float:
    mine = sorted((s for s in splits if s.symbol == symbol and s.day > day), key=lambda s: s.day)
    return math.prod(s.split_from / s.split_to for s in mine)


def t_factor(
    symbol: str, day: dt.date, raw: pd.DataFrame, splits: Sequence[S], dividends: Sequence[Dv]
) -> float:
    f = s_factor(symbol, day, splits)
    mine = raw[raw.symbol == symbol]
    for d in sorted(dividends, key=lambda x: (x.ex, x.kind)):
        if d.symbol != symbol or d.currency != "USD" or d.ex <= day:
            continue
        before = mine[mine.date < d.ex]
        if before.empty:
            continue
        c = float(before.iloc[-1].close)
        if d.cash >= c:
            continue
        f *= 1 - d.cash / c
    return f


def raw_frame(splits: Sequence[S] = SPLITS) -> pd.DataFrame:
    """Raw rows whose economic price is a smooth walk: raw = economic / S(d)."""
    rng = np.random.default_rng(11)
    out = []
    for symbol in SYMBOLS:
        lo, hi = FIRST_LAST.get(symbol, (0, len(D)))
        walk = 50.0 * np.exp(np.cumsum(rng.normal(0, 0.01, len(D))))
        for i in range(lo, hi):
            f = s_factor(symbol, D[i], splits)
            e = float(walk[i])
            out.append(
                {
                    "symbol": symbol, "date": D[i], "open": e * 0.99 / f, "high": e * 1.02 / f,
                    "low": e * 0.97 / f, "close": e / f, "volume": 1000.0 * (i + 1) * f,
                }
            )  # fmt: skip
    return pd.DataFrame(out)


def adjusted_frame(raw: pd.DataFrame, mode: str, splits: Sequence[S]) -> pd.DataFrame:
    out = raw.copy()
    if mode == "none":
        return out
    sf = np.array([s_factor(r["symbol"], r["date"], splits) for r in records(raw)])
    pf = sf
    if mode == "total":
        pf = np.array(
            [t_factor(r["symbol"], r["date"], raw, splits, DIVIDENDS) for r in records(raw)]
        )
    for c in ("open", "high", "low", "close"):
        out[c] = raw[c] * pf
    out["volume"] = raw["volume"] / sf
    return out


def fib_frame(rows: pd.DataFrame, n: int, anchor: str, last: dt.date) -> pd.DataFrame:
    """The contract's Fibonacci bars of every symbol in ``rows``."""
    index = {d: i for i, d in enumerate(xnys())}
    out = []
    for symbol, g in rows.sort_values(["symbol", "date"]).groupby("symbol", sort=True):
        g = g.reset_index(drop=True)
        k = [index[d] for d in g.date] if anchor == "calendar" else list(range(len(g)))
        g["g"] = [x // n for x in k]
        for grp, b in g.groupby("g", sort=True):
            last_session = xnys()[(int(cast(int, grp)) + 1) * n - 1]
            out.append(
                {
                    "symbol": symbol, "start_date": b.date.iloc[0], "end_date": b.date.iloc[-1],
                    "open": b.open.iloc[0], "high": b.high.max(), "low": b.low.min(),
                    "close": b.close.iloc[-1], "volume": float(b.volume.sum()),
                    "days": len(b),
                    "complete": bool(last_session <= last) if anchor == "calendar"
                    else len(b) == n,
                }
            )  # fmt: skip
    return pd.DataFrame(out)


def assert_rows_equal(got: Sequence[dict[str, Any]], want: Sequence[dict[str, Any]]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        for k, v in w.items():
            if isinstance(v, float):
                assert g[k] == pytest.approx(v, rel=REL), (k, g, w)
            else:
                assert g[k] == v, (k, g, w)


# -- the simulator, edited into the awkward cases ----------------------------------------------
@pytest.fixture(scope="module")
def market() -> Market:
    m = Market(seed=3, n_symbols=120, start=D[0], end=D[-1])
    assert len(m.splits()) >= len(SPLITS)
    return m


def vendor_split_factor(s: S, splits: Sequence[S]) -> float:
    """The vendor's cumulative factor: this split and every later one of the symbol."""
    return math.prod(
        x.split_from / x.split_to for x in splits if x.symbol == s.symbol and x.day >= s.day
    )


def edits_for(
    market: Market, splits: Sequence[S], dividends: Sequence[Dv]
) -> dict[str, dict[str, Any] | None]:
    """Edits turning the simulator's actions into ``splits`` and ``dividends``, the rest gone."""
    edits: dict[str, dict[str, Any] | None] = {}
    sim_splits = market.splits()
    for i, x in enumerate(sim_splits):
        if i >= len(splits):
            edits[x.id] = None
            continue
        s = splits[i]
        edits[x.id] = {
            "ticker": s.symbol, "execution_date": s.day.isoformat(),
            "split_from": s.split_from, "split_to": s.split_to, "adjustment_type": s.kind,
            "historical_adjustment_factor": vendor_split_factor(s, splits),
        }  # fmt: skip
    for i, y in enumerate(CorporateActions(market).dividends()):
        if i >= len(dividends):
            edits[y.id] = None
            continue
        d = dividends[i]
        edits[y.id] = {
            "ticker": d.symbol, "ex_dividend_date": d.ex.isoformat(), "cash_amount": d.cash,
            "currency": d.currency, "distribution_type": d.kind,
            "historical_adjustment_factor": None,
        }  # fmt: skip
    return edits


@pytest.fixture()
def sim(market: Market) -> Iterator[SimulatorServer]:
    with SimulatorServer(market) as s:
        s.edit_actions(edits_for(market, SPLITS, DIVIDENDS), reset=True)
        yield s


def build_bronze(lake: Lake, raw: pd.DataFrame) -> None:
    for _, g in raw.groupby("symbol"):
        write_fragment(
            lake,
            [row_of(r)
             for r in records(g)],
        )  # fmt: skip
    assert consolidate.run(lake, workers=1).ok


def fetch_cli(sim: SimulatorServer, lake: Lake, pg_url: str, *args: str) -> str:
    env = {
        **os.environ, "LAKE_URL": lake.url, "DATABASE_URL": pg_url,
        "POLYGON_API_KEY": "k", "POLYGON_REST_URL": sim.rest_url, "POLYGON_RPS": "1000",
    }  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-m", "dataflows.corporate_actions", *args],
        capture_output=True, text=True, env=env, check=False, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stderr + out.stdout


def silver_frame(lake: Lake, n: int) -> pd.DataFrame:
    tables = [
        pq.read_table(lake.path(e.key)) for e in lake.list(layout.silver_dir(n), suffix=".parquet")
    ]
    t = pa.concat_tables(tables).to_pandas() if tables else pd.DataFrame()
    return t.sort_values(["symbol", "start_date"]).reset_index(drop=True)


def check_silver(lake: Lake, raw: pd.DataFrame, splits: Sequence[S], anchor: str) -> None:
    adjusted = adjusted_frame(raw, "split", splits)
    for n in INTERVALS:
        want = records(fib_frame(adjusted, n, anchor, D[-1]))
        got = records(silver_frame(lake, n))
        assert_rows_equal(got, want)


# -- the tests ----------------------------------------------------------------------------------
def test_contract_files_factors_and_silver(
    sim: SimulatorServer, pg_url: str, local_lake: Lake
) -> None:
    raw = raw_frame()
    build_bronze(local_lake, raw)
    log = fetch_cli(sim, local_lake, pg_url)

    splits = pq.read_table(local_lake.path(layout.reference_splits()))
    assert [(f.name, str(f.type)) for f in splits.schema] == [
        ("symbol", "string"), ("execution_date", "date32[day]"), ("split_from", "double"),
        ("split_to", "double"), ("adjustment_type", "string"), ("vendor_factor", "double"),
        ("id", "string"), ("ingested_at", "timestamp[us, tz=UTC]"),
    ]  # fmt: skip
    got = sorted(
        (r["symbol"], r["execution_date"], r["split_from"], r["split_to"], r["adjustment_type"])
        for r in splits.to_pylist()
    )
    assert got == sorted((s.symbol, s.day, s.split_from, s.split_to, s.kind) for s in SPLITS)
    divs = pq.read_table(local_lake.path(layout.reference_dividends()))
    assert [(f.name, str(f.type)) for f in divs.schema] == [
        ("symbol", "string"), ("ex_dividend_date", "date32[day]"), ("cash_amount", "double"),
        ("currency", "string"), ("distribution_type", "string"), ("pay_date", "date32[day]"),
        ("record_date", "date32[day]"), ("declaration_date", "date32[day]"),
        ("frequency", "int32"), ("vendor_factor", "double"), ("id", "string"),
        ("ingested_at", "timestamp[us, tz=UTC]"),
    ]  # fmt: skip
    keys = [(r["symbol"], r["ex_dividend_date"], r["distribution_type"]) for r in divs.to_pylist()]
    assert sorted(keys) == sorted((d.symbol, d.ex, d.kind) for d in DIVIDENDS)
    assert len(set(keys)) == len(keys)
    # the dividend before the first row and the one at least the close are reported
    assert "no row before" in log and ">= the close" in log

    assert resample.main(["--lake", local_lake.url, "--workers", "1"]) == 0
    check_silver(local_lake, raw, SPLITS, "calendar")
    adjustments = pq.read_table(local_lake.path(layout.adjustments()))
    assert [(f.name, str(f.type)) for f in adjustments.schema] == [
        ("symbol", "string"), ("split_version", "string"),
        ("applied_at", "timestamp[us, tz=UTC]"),
    ]  # fmt: skip
    assert sorted(adjustments["symbol"].to_pylist()) == list(SYMBOLS)


@pytest.fixture()
def served(
    sim: SimulatorServer, pg_url: str, local_lake: Lake, redis_server_url: str, redis_prefix: str
) -> Iterator[tuple[TestClient, pd.DataFrame]]:
    raw = raw_frame()
    build_bronze(local_lake, raw)
    with postgres.connect(pg_url, autocommit=True) as conn:
        postgres.migrate(conn)
        for _, g in raw.groupby("symbol"):
            postgres.upsert_daily(
                conn,
                table_of([row_of(r)
                          for r in records(g)]),
            )  # fmt: skip
    ca.run(simulator_fetch(sim.rest_url), local_lake, pg_url)
    assert resample.run(local_lake, workers=1).ok
    settings = ApiSettings(
        lake_url=local_lake.url, database_url=SecretStr(pg_url),
        redis_url=SecretStr(redis_server_url), redis_prefix=redis_prefix,
        api_keys=SecretStr(KEY),
    )  # fmt: skip
    with TestClient(create_app(settings)) as c:
        yield c, raw


def _get(client: TestClient, symbol: str, **params: Any) -> dict[str, Any]:
    r = client.get(f"/v1/bars/{symbol}", params=params, headers=HEADERS)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _typed(bars: Sequence[dict[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    out = []
    for b in bars:
        row = {k: b[k] for k in keys}
        for k in ("date", "start_date", "end_date"):
            if k in row:
                row[k] = dt.date.fromisoformat(row[k])
        out.append(row)
    return out


DAILY_KEYS: Final = ("date", "open", "high", "low", "close", "volume")
FIB_KEYS: Final = (
    "start_date", "end_date", "open", "high", "low", "close", "volume", "days", "complete",
)  # fmt: skip


@pytest.mark.parametrize("mode", ["split", "none", "total"])
def test_api_daily_and_fibonacci_match_the_reference(
    served: tuple[TestClient, pd.DataFrame], mode: str
) -> None:
    client, raw = served
    adjusted = adjusted_frame(raw, mode, SPLITS)
    for symbol in SYMBOLS:
        want = records(adjusted[adjusted.symbol == symbol][list(DAILY_KEYS)])
        for params in ({}, {"start": D[0].isoformat()}):  # the lake, then Postgres
            body = _get(client, symbol, adjusted=mode, **params)
            assert body["adjusted"] == mode == body["adjustment"]["mode"]
            assert_rows_equal(_typed(body["bars"], DAILY_KEYS), want)
        for n in INTERVALS:
            fib = fib_frame(adjusted[adjusted.symbol == symbol], n, "calendar", D[-1])
            body = _get(client, symbol, interval=f"{n}d", adjusted=mode)
            assert body["adjusted"] == mode
            assert_rows_equal(_typed(body["bars"], FIB_KEYS), records(fib[list(FIB_KEYS)]))


def test_api_windows_and_unknown_modes(served: tuple[TestClient, pd.DataFrame]) -> None:
    client, raw = served
    total = adjusted_frame(raw, "total", SPLITS)
    want = total[(total.symbol == "DIV") & (total.date >= D[60])][list(DAILY_KEYS)]
    body = _get(client, "DIV", adjusted="total", start=D[60].isoformat())
    assert_rows_equal(_typed(body["bars"], DAILY_KEYS), records(want))
    body = _get(client, "DIV", adjusted="total", limit=10)
    assert_rows_equal(_typed(body["bars"], DAILY_KEYS), records(want.tail(10)))
    for interval in ("1d", *(f"{n}d" for n in INTERVALS)):
        for bad in ("raw", "SPLIT", "", "true"):
            r = client.get(
                "/v1/bars/DIV", params={"interval": interval, "adjusted": bad}, headers=HEADERS
            )
            assert r.status_code == 400, (interval, bad, r.text)
            assert "adjusted" in r.json()["detail"]


CHANGED: Final = (
    *SPLITS[:3],
    S("TWO", D[80], 1.0, 6.0),  # corrected ratio
    *SPLITS[5:],  # WKD's split withdrawn
)


def test_changed_and_withdrawn_splits_rebuild_to_the_full_result(
    sim: SimulatorServer,
    market: Market,
    pg_url: str,
    local_lake: Lake,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    raw = raw_frame()
    build_bronze(local_lake, raw)
    fetch = simulator_fetch(sim.rest_url)
    ca.run(fetch, local_lake, pg_url)
    assert resample.run(local_lake, workers=1).ok
    before = snapshot(local_lake)

    edits = edits_for(market, SPLITS, DIVIDENDS)
    ids = [x.id for x in market.splits()]
    edits[ids[3]] = {**(edits[ids[3]] or {}), "split_to": 6.0}
    edits[ids[4]] = None
    sim.edit_actions(edits, reset=True)
    # a scope holding neither symbol changes nothing
    out = ca.run(fetch, local_lake, pg_url, symbols=["REV", "DIV"])
    assert out.symbols_changed() == []
    out = ca.run(fetch, local_lake, pg_url, since=D[60])
    assert out.symbols_changed() == ["TWO", "WKD"]
    report = resample.run(local_lake, workers=1)
    assert report.ok and {r.symbols_changed for r in report.per_interval} == {2}
    check_silver(local_lake, raw, CHANGED, "calendar")
    assert snapshot(local_lake) != before

    full = Lake(tmp_path_factory.mktemp("full").as_uri())
    build_bronze(full, raw)
    for key in (layout.reference_splits(), layout.reference_dividends()):
        full.write_bytes(key, local_lake.read_bytes(key))
    assert resample.run(full, workers=1, full=True).ok
    assert snapshot(full) == snapshot(local_lake)

    shards = Lake(tmp_path_factory.mktemp("shards").as_uri())
    build_bronze(shards, raw)
    for key in (layout.reference_splits(), layout.reference_dividends()):
        shards.write_bytes(key, local_lake.read_bytes(key))
    for i in range(3):
        argv = ["--lake", shards.url, "--workers", "1", "--shard", f"{i}/3"]
        assert resample.main(argv) == 0
    assert snapshot(shards) == snapshot(local_lake)

    again = ca.run(fetch, local_lake, pg_url)
    assert again.symbols_changed() == []
    assert resample.run(local_lake, workers=1).ok
    assert snapshot(local_lake) == snapshot(full)


def test_symbol_anchor(sim: SimulatorServer, pg_url: str, local_lake: Lake) -> None:
    raw = raw_frame()
    build_bronze(local_lake, raw)
    ca.run(simulator_fetch(sim.rest_url), local_lake, pg_url)
    assert resample.run(local_lake, workers=1, anchor="symbol").ok
    check_silver(local_lake, raw, SPLITS, "symbol")


def test_vendor_disagreement_is_reported(
    sim: SimulatorServer, market: Market, pg_url: str, local_lake: Lake, tmp_path: Path
) -> None:
    build_bronze(local_lake, raw_frame())
    edits = edits_for(market, SPLITS, DIVIDENDS)
    first = market.splits()[0].id
    edits[first] = {**(edits[first] or {}), "historical_adjustment_factor": 10.0 * (1 + 2e-6)}
    sim.edit_actions(edits, reset=True)
    out = ca.run(simulator_fetch(sim.rest_url), local_lake, pg_url)
    assert out.check.symbols() == ["REV"]
    edits[first] = {**(edits[first] or {}), "historical_adjustment_factor": 10.0 * (1 + 5e-7)}
    sim.edit_actions(edits, reset=True)
    assert ca.run(simulator_fetch(sim.rest_url), local_lake, pg_url).check.symbols() == []
