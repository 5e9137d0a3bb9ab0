"""``/v1/bars`` adjusted=split|none|total over a real lake, Postgres and the batch jobs."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from batch import consolidate, resample
from core import adjustments as adj
from core import calendar, layout
from core.lake import Lake
from core.schemas import BRONZE_DAILY
from core.stores import actions as store
from core.stores import postgres
from tests.api_market import api_settings

pytestmark = pytest.mark.unit
KEY = "k-secret"
HEADERS = {"X-API-Key": KEY}
NOW = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
LAST = calendar.previous_session(dt.datetime.now(dt.UTC).date())
DAYS = calendar.sessions_between(calendar.session_at(calendar.session_index(LAST) - 29), LAST)
SPLIT_DAY = DAYS[15]
EX_DAY = DAYS[20]
EARLY_EX = DAYS[0]  # no row before it: cannot be applied
SYMBOL = "SPL"


def _rows() -> pa.Table:
    rows = []
    for i, d in enumerate(DAYS):
        p = 400.0 + i if d < SPLIT_DAY else 100.0 + i / 4
        rows.append(
            {
                "symbol": SYMBOL,
                "date": d,
                "open": p,
                "high": p + 2,
                "low": p - 2,
                "close": p + 1,
                "volume": 1000.0 + i,
                "vwap": p,
                "transactions": 10,
                "source": "rest",
                "ingested_at": NOW,
            }
        )
    return pa.Table.from_pylist(rows, schema=BRONZE_DAILY)


SPLITS = [
    {"symbol": SYMBOL, "execution_date": SPLIT_DAY, "split_from": 1.0, "split_to": 4.0,
     "adjustment_type": "forward_split", "vendor_factor": 0.25, "id": "s1", "ingested_at": NOW}
]  # fmt: skip
DIVIDENDS = [
    {"symbol": SYMBOL, "ex_dividend_date": d, "cash_amount": 0.5, "currency": "USD",
     "distribution_type": kind, "pay_date": None, "record_date": None, "declaration_date": None,
     "frequency": 4, "vendor_factor": None, "id": f"d{i}", "ingested_at": NOW}
    for i, (d, kind) in enumerate([(EX_DAY, "recurring"), (EARLY_EX, "special")])
]  # fmt: skip


@pytest.fixture()
def client(
    local_lake: Lake, pg_url: str, redis_server_url: str, redis_prefix: str
) -> Iterator[TestClient]:
    local_lake.write_table(layout.range_fragment(SYMBOL, DAYS[0], DAYS[-1]), _rows())
    with postgres.connect(pg_url, autocommit=True) as conn:
        postgres.migrate(conn)
        postgres.upsert_daily(conn, _rows())
        store.sync(conn, store.SPLITS_TABLE, SPLITS, symbols=None, since=None)
        store.sync(conn, store.DIVIDENDS_TABLE, DIVIDENDS, symbols=None, since=None)
        local_lake.write_table(layout.reference_splits(), store.read_all(conn, store.SPLITS_TABLE))
        local_lake.write_table(
            layout.reference_dividends(), store.read_all(conn, store.DIVIDENDS_TABLE)
        )
    assert consolidate.run(local_lake, workers=1).ok
    assert resample.run(local_lake, workers=1).ok
    settings = api_settings(local_lake, pg_url, redis_server_url, redis_prefix, KEY)
    with TestClient(create_app(settings)) as c:
        yield c


def _get(client: TestClient, **params: Any) -> dict[str, Any]:
    r = client.get(f"/v1/bars/{SYMBOL}", params=params, headers=HEADERS)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _closes(body: dict[str, Any]) -> dict[str, float]:
    return {b.get("date", b.get("start_date")): b["close"] for b in body["bars"]}


@pytest.mark.parametrize("start", [None, DAYS[0].isoformat()])  # lake, then Postgres
def test_daily_bars_split_none_total(client: TestClient, start: str | None) -> None:
    params = {"start": start} if start else {}
    default = _get(client, **params)
    assert default["adjusted"] == "split" == default["adjustment"]["mode"]
    split = _closes(default)
    raw = _closes(_get(client, adjusted="none", **params))
    eve, day = DAYS[14].isoformat(), SPLIT_DAY.isoformat()
    assert 3.5 < raw[eve] / raw[day] < 4.5  # raw: the 4-for-1 jump
    assert abs(split[eve] / split[day] - 1) < 0.15  # adjusted: continuous
    assert split[eve] == raw[eve] * 0.25 and split[day] == raw[day]
    info = default["adjustment"]
    assert [s["execution_date"] for s in info["splits"]] == [day]
    assert info["split_version"] == adj.split_version(adj.splits_of_rows(SPLITS))
    total = _get(client, adjusted="total", **params)
    term = 1 - 0.5 / raw[DAYS[19].isoformat()]
    assert _closes(total)[eve] == pytest.approx(raw[eve] * 0.25 * term, rel=1e-12)
    assert _closes(total)[EX_DAY.isoformat()] == raw[EX_DAY.isoformat()]
    vol = {b["date"]: b["volume"] for b in total["bars"]}
    assert vol[eve] == 1014.0 / 0.25  # volume stays split-adjusted
    assert total["adjustment"]["dividends_applied"] == 1
    if start is None:  # the whole history: the dividend on the first row cannot be applied
        skipped = total["adjustment"]["dividends_skipped"]
        assert [s["ex_dividend_date"] for s in skipped] == [EARLY_EX.isoformat()]
        assert "no row before" in skipped[0]["reason"]


def test_fibonacci_bars_split_none_total(client: TestClient) -> None:
    split = _get(client, interval="8d")
    raw = _get(client, interval="8d", adjusted="none")
    total = _get(client, interval="8d", adjusted="total")
    assert [b["start_date"] for b in split["bars"]] == [b["start_date"] for b in raw["bars"]]
    spans = [b for b in raw["bars"] if b["start_date"] < SPLIT_DAY.isoformat() < b["end_date"]]
    for b in spans:  # a bar across the split: raw high is pre-split, raw low post-split
        assert b["high"] / b["low"] > 3
    for b in split["bars"]:
        assert b["high"] / b["low"] < 1.5
    for s, t in zip(split["bars"], total["bars"], strict=True):
        assert t["close"] <= s["close"] and t["days"] == s["days"]
    assert raw["adjusted"] == "none" and total["adjustment"]["dividends_applied"] == 1


def test_unknown_adjustment_is_a_400(client: TestClient) -> None:
    for interval in ("1d", "8d"):
        r = client.get(
            f"/v1/bars/{SYMBOL}", params={"interval": interval, "adjusted": "raw"}, headers=HEADERS
        )
        assert r.status_code == 400 and "adjusted" in r.json()["detail"]
