"""Contract check: corporate actions through consolidate, resample, gold and the API.

One symbol with awkward actions (two splits on sessions and one on a Saturday, two dividends of
different types on one ex-date, one in CAD, one on a split day, one before the first row, one
at least its close, one whose ex-date has no row, one after the last row) goes through the real
entry points; every price the pipeline serves or writes is compared with an oracle written
from the contract (``tests.contract_oracle``), sharing no code with ``core.adjustments``.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from batch import consolidate, gold, resample
from core import layout
from core.lake import Lake
from core.schemas import BRONZE_DAILY, DIVIDENDS, SPLITS
from core.stores import actions as store
from core.stores import postgres
from tests import contract_oracle as oracle
from tests.api_market import api_settings

pytestmark = pytest.mark.unit
KEY = "k-secret"
HEADERS = {"X-API-Key": KEY}
SYM = "ACT"
PLAIN = "PLN"  # no actions at all
NOW = dt.datetime(2025, 1, 2, tzinfo=dt.UTC)
DAYS = oracle.sessions_from(dt.date(2024, 2, 1), 60)
GAP = DAYS[15]  # no row that day: a dividend's ex-date
ROW_DAYS = [d for d in DAYS if d != GAP]


def _saturday_after(day: dt.date) -> dt.date:
    return day + dt.timedelta(days=(5 - day.weekday()) % 7 or 7)


SPLITS_O = [
    oracle.OSplit(DAYS[10], 1.0, 2.0),  # 2-for-1
    oracle.OSplit(DAYS[30], 3.0, 1.0),  # 1-for-3 reverse
    oracle.OSplit(_saturday_after(DAYS[40]), 2.0, 3.0),  # 3-for-2, executed on a Saturday
]
TYPES = {0: "forward_split", 1: "reverse_split", 2: "stock_dividend"}


def _raw_rows() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    out = []
    for i, d in enumerate(ROW_DAYS):
        # raw prices jump at each split as traded prices do
        base = 40.0 * oracle.s_factor(d, SPLITS_O) ** -1 / 4
        c = base * (1 + 0.02 * rng.standard_normal())
        o = base * (1 + 0.01 * rng.standard_normal())
        out.append(
            {
                "symbol": SYM,
                "date": d,
                "open": o,
                "high": max(o, c) * 1.01,
                "low": min(o, c) * 0.99,
                "close": c,
                "volume": float(1000 + 37 * i),
                "vwap": (o + c) / 2,
                "transactions": 10 + i,
                "source": "rest",
                "ingested_at": NOW,
            }
        )
    df = pd.DataFrame(out)
    eve = df["date"] == DAYS[39]  # a dividend of exactly C: skipped
    df.loc[eve, ["open", "high", "low", "close", "vwap"]] = [2.0, 2.1, 1.9, 2.0, 2.0]
    return df


RAW = _raw_rows()
LAST_ROW = ROW_DAYS[-1]
FUTURE_EX = oracle.sessions_from(LAST_ROW, 3)[2]

DIVIDENDS_O = [
    oracle.ODividend(DAYS[0], 0.4, "USD", "recurring"),  # no row before: skipped
    oracle.ODividend(DAYS[5], 0.5, "USD", "recurring"),
    oracle.ODividend(GAP, 0.25, "USD", "recurring"),  # C from DAYS[14]
    oracle.ODividend(DAYS[20], 0.3, "USD", "recurring"),  # two types on one ex-date
    oracle.ODividend(DAYS[20], 1.0, "USD", "special"),
    oracle.ODividend(DAYS[20], 0.7, "CAD", "supplemental"),  # not USD: skipped
    oracle.ODividend(DAYS[25], 1000.0, "USD", "irregular"),  # >= C: skipped
    oracle.ODividend(DAYS[30], 0.2, "USD", "recurring"),  # on the split day
    oracle.ODividend(DAYS[40], 2.0, "USD", "special"),  # == C: skipped
    oracle.ODividend(FUTURE_EX, 0.1, "USD", "recurring"),  # after the last row
]


def splits_table() -> pa.Table:
    rows = [
        {"symbol": SYM, "execution_date": s.execution_date, "split_from": s.split_from,
         "split_to": s.split_to, "adjustment_type": TYPES[i], "vendor_factor": None,
         "id": f"s{i}", "ingested_at": NOW}
        for i, s in enumerate(SPLITS_O)
    ]  # fmt: skip
    return pa.Table.from_pylist(rows, schema=SPLITS)


def dividends_table() -> pa.Table:
    rows = [
        {"symbol": SYM, "ex_dividend_date": d.ex_dividend_date, "cash_amount": d.cash_amount,
         "currency": d.currency, "distribution_type": d.distribution_type, "pay_date": None,
         "record_date": None, "declaration_date": None, "frequency": 4, "vendor_factor": None,
         "id": f"d{i}", "ingested_at": NOW}
        for i, d in enumerate(DIVIDENDS_O)
    ]  # fmt: skip
    return pa.Table.from_pylist(rows, schema=DIVIDENDS)


def plain_rows() -> pd.DataFrame:
    df = RAW.copy()
    df["symbol"] = PLAIN
    return df


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    """The lake after consolidate, resample and gold (1d, 3d), run by their command lines."""
    lake = Lake((tmp_path_factory.mktemp("actions") / "lake").as_uri())
    for df in (RAW, plain_rows()):
        table = pa.Table.from_pandas(df, schema=BRONZE_DAILY, preserve_index=False)
        sym = df["symbol"].iloc[0]
        lake.write_table(layout.range_fragment(sym, ROW_DAYS[0], ROW_DAYS[-1]), table)
    lake.write_table(layout.reference_splits(), splits_table())
    lake.write_table(layout.reference_dividends(), dividends_table())
    url = lake.url
    assert consolidate.main(["--lake", url]) == 0
    assert resample.main(["--lake", url]) == 0
    assert gold.main(["--lake", url, "--intervals", "1d,3d"]) == 0
    return lake


PG_FROM = DAYS[22]
"""The first row Postgres holds when it serves (older C come from the lake)."""
PG_HOLE = DAYS[39]
"""A row the lake has and Postgres lacks: C of the dividend ex DAYS[40] (== C: skipped)."""


@pytest.fixture(params=["lake", "postgres"])
def client(
    request: pytest.FixtureRequest,
    built: Lake,
    pg_url: str,
    redis_server_url: str,
    redis_prefix: str,
) -> Iterator[TestClient]:
    """The API over the built lake; with ``postgres``, raw_ohlcv and the actions tables too."""
    with postgres.connect(pg_url, autocommit=True) as conn:
        postgres.migrate(conn)
        if request.param == "postgres":
            recent = RAW[(RAW["date"] >= PG_FROM) & (RAW["date"] != PG_HOLE)]
            postgres.upsert_daily(
                conn, pa.Table.from_pandas(recent, schema=BRONZE_DAILY, preserve_index=False)
            )
            store.sync(
                conn, store.SPLITS_TABLE, splits_table().to_pylist(), symbols=None, since=None
            )
            store.sync(
                conn,
                store.DIVIDENDS_TABLE,
                dividends_table().to_pylist(),
                symbols=None,
                since=None,
            )
    settings = api_settings(built, pg_url, redis_server_url, redis_prefix, KEY)
    with TestClient(create_app(settings)) as c:
        yield c


def _expected(mode: str) -> pd.DataFrame:
    return oracle.adjusted(RAW, SPLITS_O, DIVIDENDS_O, mode)


def _compare(
    got: list[dict[str, Any]], want: pd.DataFrame, key: str, cols: tuple[str, ...]
) -> None:
    assert [str(g[key]) for g in got] == [str(w) for w in want[key]]
    for g, (_, w) in zip(got, want.iterrows(), strict=True):
        for c in cols:
            assert oracle.close_rel(g[c], float(w[c]), 1e-12), (g[key], c, g[c], w[c])


def _get(client: TestClient, **params: Any) -> dict[str, Any]:
    r = client.get(f"/v1/bars/{SYM}", params={"page_size": 1000, **params}, headers=HEADERS)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_postgres_serves_when_it_holds_rows(
    client: TestClient, request: pytest.FixtureRequest
) -> None:
    served = _get(client, start=PG_FROM.isoformat())["served_by"]
    assert ("postgres" in served) == (request.node.callspec.params["client"] == "postgres")


PRICES = ("open", "high", "low", "close", "vwap", "volume")


def test_oracle_sanity() -> None:
    used, skipped = oracle.usable_dividends(RAW, DIVIDENDS_O)
    assert {(d.ex_dividend_date, d.distribution_type) for d in skipped} == {
        (DAYS[0], "recurring"), (DAYS[20], "supplemental"), (DAYS[25], "irregular"),
        (DAYS[40], "special"),
    }  # fmt: skip
    assert dict((d.ex_dividend_date, c) for d, c in used)[GAP] == float(
        RAW.loc[RAW["date"] == DAYS[14], "close"].iloc[0]
    )


@pytest.mark.parametrize("mode", ["split", "none", "total"])
def test_api_daily_whole_history(client: TestClient, mode: str) -> None:
    body = _get(client, adjusted=mode)
    assert body["adjusted"] == mode
    _compare(body["bars"], _expected(mode), "date", PRICES)


@pytest.mark.parametrize("mode", ["split", "none", "total"])
def test_api_daily_window(client: TestClient, mode: str) -> None:
    start, end = DAYS[12], DAYS[45]
    body = _get(client, adjusted=mode, start=start.isoformat(), end=end.isoformat())
    want = _expected(mode)
    want = want[(want["date"] >= start) & (want["date"] <= end)]
    _compare(body["bars"], want, "date", PRICES)


def test_api_reports_skipped_dividends(client: TestClient) -> None:
    info = _get(client, adjusted="total")["adjustment"]
    skipped = {(s["ex_dividend_date"], s["distribution_type"]) for s in info["dividends_skipped"]}
    _, want = oracle.usable_dividends(RAW, DIVIDENDS_O)
    assert skipped == {(d.ex_dividend_date.isoformat(), d.distribution_type) for d in want}


@pytest.mark.parametrize("mode", ["split", "none", "total"])
@pytest.mark.parametrize("n", [3, 5])
def test_api_fibonacci(client: TestClient, mode: str, n: int) -> None:
    body = _get(client, adjusted=mode, interval=f"{n}d")
    want = oracle.fib_bars(_expected(mode), n, lake_last=LAST_ROW)
    _compare(body["bars"], want, "start_date", ("open", "high", "low", "close", "volume"))
    assert [b["end_date"] for b in body["bars"]] == [d.isoformat() for d in want["end_date"]]
    assert [b["days"] for b in body["bars"]] == list(want["days"])
    assert [b["complete"] for b in body["bars"]] == list(want["complete"])


@pytest.mark.parametrize("value", ["SPLIT", "raw", "true", ""])
def test_api_refuses_unknown_adjustment(client: TestClient, value: str) -> None:
    for interval in ("1d", "3d"):
        r = client.get(
            f"/v1/bars/{SYM}", params={"adjusted": value, "interval": interval}, headers=HEADERS
        )
        assert r.status_code == 400, (interval, value, r.status_code, r.text)


@pytest.mark.parametrize("n", [3, 5])
def test_silver_is_built_from_split_adjusted_rows(built: Lake, n: int) -> None:
    files = built.list(f"silver/silver_{n}d", suffix=".parquet")
    got = pd.concat([pq.read_table(built.path(e.key)).to_pandas() for e in files])
    for sym in (SYM, PLAIN):
        mine = got[got["symbol"] == sym].sort_values("start_date")
        raw = RAW if sym == SYM else plain_rows()
        want = oracle.fib_bars(oracle.adjusted(raw, SPLITS_O if sym == SYM else []), n)
        _compare(mine.to_dict("records"), want, "start_date",
                 ("open", "high", "low", "close", "volume"))  # fmt: skip
        assert list(mine["days"]) == list(want["days"])
        assert list(mine["complete"]) == list(want["complete"])


def test_adjustments_metadata(built: Lake) -> None:
    t = pq.read_table(built.path("processing_metadata/adjustments.parquet"))
    assert t.schema.names == ["symbol", "split_version", "applied_at"]
    assert t.schema.field("symbol").type == pa.string()
    assert t.schema.field("split_version").type == pa.string()
    assert t.schema.field("applied_at").type == pa.timestamp("us", tz="UTC")
    versions = dict(zip(t["symbol"].to_pylist(), t["split_version"].to_pylist(), strict=True))
    assert versions.get(SYM)
    assert versions.get(PLAIN) != versions[SYM]


def _gold(lake: Lake, interval: str) -> pd.DataFrame:
    """Every gold row of ``interval``, each file checked against its path's year and month."""
    frames = []
    for e in lake.list(f"gold/indicators_{interval}", suffix=".parquet"):
        m = re.fullmatch(
            rf"gold/indicators_{interval}/year=(\d{{4}})/month=(\d{{2}})/data_{interval}_(\d{{6}})\.parquet",
            e.key,
        )
        assert m is not None, e.key
        assert m[3] == m[1] + m[2], e.key
        frame = pq.read_table(lake.path(e.key)).to_pandas()
        month = frame["date" if interval == "1d" else "start_date"]
        assert {(d.year, d.month) for d in month} == {(int(m[1]), int(m[2]))}, e.key
        frames.append(frame)
    out: pd.DataFrame = pd.concat(frames)
    return out


INDICATOR_COLUMNS = (
    *(f"ema_{n}" for n in oracle.EMA_SPANS), "macd_fast", "macd_slow", "rsi_14", "atr_14",
)  # fmt: skip


def _compare_gold(got: pd.DataFrame, bars: pd.DataFrame, key: str) -> None:
    want = oracle.indicators(bars)
    got = got.sort_values(key).reset_index(drop=True)
    assert [str(x) for x in got[key]] == [str(x) for x in bars[key]]
    for c in ("close", *INDICATOR_COLUMNS):
        for i, (a, b) in enumerate(zip(got[c].tolist(), want[c].tolist(), strict=True)):
            assert oracle.close_rel(a, b, floor=0.0), (c, i, a, b)
    g_vegas = [None if pd.isna(v) else int(v) for v in got["vegas"]]
    w_vegas = [None if pd.isna(v) else int(v) for v in want["vegas"]]
    assert g_vegas == w_vegas


def test_gold_uses_split_adjusted_rows(built: Lake) -> None:
    g1 = _gold(built, "1d")
    g1 = g1[g1["symbol"] == SYM]
    _compare_gold(g1, _expected("split"), "date")
    g3 = _gold(built, "3d")
    g3 = g3[g3["symbol"] == SYM]
    _compare_gold(g3, oracle.fib_bars(_expected("split"), 3), "start_date")


def test_a_split_arriving_later_rebuilds_silver_and_gold(tmp_path: Path) -> None:
    """Built without actions, then the splits arrive, then one is withdrawn: incremental runs
    give the oracle's bars and indicators, and the bytes of a full rebuild."""
    lake = Lake((tmp_path / "lake").as_uri())
    for df in (RAW, plain_rows()):
        table = pa.Table.from_pandas(df, schema=BRONZE_DAILY, preserve_index=False)
        lake.write_table(layout.range_fragment(df["symbol"].iloc[0], ROW_DAYS[0], LAST_ROW), table)

    def run(lake: Lake, *extra: str) -> None:
        assert consolidate.main(["--lake", lake.url]) == 0
        assert resample.main(["--lake", lake.url, *extra]) == 0
        assert gold.main(["--lake", lake.url, "--intervals", "1d,3d", *extra]) == 0

    def check(splits: list[oracle.OSplit]) -> None:
        bars = oracle.fib_bars(oracle.adjusted(RAW, splits), 3)
        silver = pd.concat(
            pq.read_table(lake.path(e.key)).to_pandas()
            for e in lake.list("silver/silver_3d", suffix=".parquet")
        )
        mine = silver[silver["symbol"] == SYM].sort_values("start_date")
        _compare(mine.to_dict("records"), bars, "start_date", ("open", "high", "low", "close",
                                                              "volume"))  # fmt: skip
        g1 = _gold(lake, "1d")
        _compare_gold(g1[g1["symbol"] == SYM], oracle.adjusted(RAW, splits), "date")
        g3 = _gold(lake, "3d")
        _compare_gold(g3[g3["symbol"] == SYM], bars, "start_date")

    run(lake)
    check([])
    lake.write_table(layout.reference_splits(), splits_table())
    run(lake)
    check(SPLITS_O)
    assert pq.read_table(lake.path("processing_metadata/adjustments.parquet")).num_rows == 2
    lake.write_table(layout.reference_splits(), splits_table().slice(1))  # first withdrawn
    run(lake)
    check(SPLITS_O[1:])
    # announced ahead: executes after the last row, so it moves every row
    ahead = oracle.OSplit(FUTURE_EX, 1.0, 5.0)
    future = splits_table().slice(1).to_pylist()
    future.append(
        {**future[-1], "execution_date": ahead.execution_date, "split_from": 1.0, "split_to": 5.0}
    )
    lake.write_table(layout.reference_splits(), pa.Table.from_pylist(future, schema=SPLITS))
    run(lake)
    check([*SPLITS_O[1:], ahead])

    full = Lake((tmp_path / "full").as_uri())
    shutil.copytree(tmp_path / "lake" / "bronze", tmp_path / "full" / "bronze")
    shutil.copytree(tmp_path / "lake" / "reference", tmp_path / "full" / "reference")
    run(full, "--full")
    for prefix in ("silver", "gold"):
        mine = {p.relative_to(tmp_path / "lake"): p.read_bytes()
                for p in (tmp_path / "lake" / prefix).rglob("*.parquet")}  # fmt: skip
        rebuilt = {p.relative_to(tmp_path / "full"): p.read_bytes()
                   for p in (tmp_path / "full" / prefix).rglob("*.parquet")}  # fmt: skip
        assert mine and mine == rebuilt, prefix


@pytest.mark.parametrize("day", [DAYS[9], DAYS[10], DAYS[29], DAYS[40], LAST_ROW])
def test_cross_section_is_split_adjusted(client: TestClient, day: dt.date) -> None:
    r = client.get("/v1/bars", params={"date": day.isoformat()}, headers=HEADERS)
    assert r.status_code == 200, r.text
    got = {b["symbol"]: b for b in r.json()["bars"]}
    for sym, splits in ((SYM, SPLITS_O), (PLAIN, [])):
        raw = RAW.assign(symbol=sym)
        want = oracle.adjusted(raw, splits)
        row = want[want["date"] == day]
        _compare([got[sym]], row, "date", PRICES)
    fib = client.get(
        "/v1/bars", params={"date": day.isoformat(), "interval": "3d"}, headers=HEADERS
    )
    assert fib.status_code == 200, fib.text
    bars = oracle.fib_bars(_expected("split"), 3, lake_last=LAST_ROW)
    holding = bars[(bars["start_date"] <= day) & (bars["end_date"] >= day)]
    mine = [b for b in fib.json()["bars"] if b["symbol"] == SYM]
    _compare(mine, holding, "start_date", ("open", "high", "low", "close", "volume"))


@pytest.mark.parametrize("mode", ["split", "none", "total"])
def test_api_fibonacci_window_filters_on_start_date(client: TestClient, mode: str) -> None:
    start, end = DAYS[13], DAYS[41]
    want = oracle.fib_bars(_expected(mode), 3, lake_last=LAST_ROW)
    want = want[(want["start_date"] >= start) & (want["start_date"] <= end)]
    body = _get(client, adjusted=mode, interval="3d", start=start.isoformat(), end=end.isoformat())
    _compare(body["bars"], want, "start_date", ("open", "high", "low", "close", "volume"))
    body = _get(client, adjusted=mode, interval="3d", end=end.isoformat(), limit=4)
    _compare(body["bars"], want.tail(4), "start_date", ("open", "close", "volume"))


def test_api_fibonacci_of_symbol_anchored_silver(
    tmp_path: Path, pg_url: str, redis_server_url: str, redis_prefix: str
) -> None:
    """With silver built ``--anchor symbol``, every mode groups N rows as silver does."""
    lake = Lake((tmp_path / "lake").as_uri())
    table = pa.Table.from_pandas(RAW, schema=BRONZE_DAILY, preserve_index=False)
    lake.write_table(layout.range_fragment(SYM, ROW_DAYS[0], LAST_ROW), table)
    lake.write_table(layout.reference_splits(), splits_table())
    lake.write_table(layout.reference_dividends(), dividends_table())
    assert consolidate.main(["--lake", lake.url]) == 0
    assert resample.main(["--lake", lake.url, "--anchor", "symbol", "--intervals", "5"]) == 0
    with postgres.connect(pg_url, autocommit=True) as conn:
        postgres.migrate(conn)
    settings = api_settings(lake, pg_url, redis_server_url, redis_prefix, KEY)
    with TestClient(create_app(settings)) as c:
        for mode in ("split", "none", "total"):
            want = oracle.fib_bars(_expected(mode), 5, "symbol")
            body = _get(c, adjusted=mode, interval="5d")
            _compare(body["bars"], want, "start_date", ("open", "high", "low", "close", "volume"))
            assert [b["complete"] for b in body["bars"]] == list(want["complete"]), mode
