"""/v1/indicators over a lake built by the real jobs: JSON, Parquet, cross-sections, errors."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterator

import numpy as np
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api.main import create_app
from batch import consolidate, gold, resample
from core.lake import Lake
from core.schemas import GOLD_DAILY, GOLD_FIB
from core.settings import ApiSettings
from tests.batch_support import Row, window, write_fragment

pytestmark = pytest.mark.unit
KEY = "k-indicators"
HEADERS = {"X-API-Key": KEY}
DAYS = window(dt.date(2024, 1, 2), 200)


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    root = tmp_path_factory.mktemp("lake")
    lake = Lake(root.as_uri())
    rng = np.random.default_rng(3)
    for symbol, days in (("AAPL", DAYS), ("MSFT", DAYS[100:]), ("ONE", DAYS[50:51])):
        price, rows = 100.0, []
        for d in days:
            price *= float(np.exp(rng.normal(0, 0.02)))
            rows.append(Row(symbol, d, price, price * 1.01, price * 0.99, price, 1e6))
        write_fragment(lake, rows)
    assert consolidate.run(lake, workers=1).ok
    assert resample.run(lake, workers=1).ok
    assert gold.run(lake, workers=1).ok
    return lake


@pytest.fixture()
def client(lake: Lake) -> Iterator[TestClient]:
    settings = ApiSettings(lake_url=lake.url, api_keys=SecretStr(KEY))
    with TestClient(create_app(settings)) as c:
        yield c


def test_one_symbols_daily_indicators(client: TestClient) -> None:
    r = client.get(
        "/v1/indicators/aapl", params={"start": "2024-06-03", "limit": 5}, headers=HEADERS
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["symbol"] == "AAPL" and body["interval"] == "1d"
    rows = body["rows"]
    assert len(rows) == 5 and rows[-1]["date"] == DAYS[-1].isoformat()
    assert list(rows[0]) == [f.name for f in GOLD_DAILY][1:]
    assert all(r["ema_169"] is not None and r["vegas"] in (-1, 0, 1) for r in rows)
    early = client.get("/v1/indicators/AAPL", params={"end": DAYS[3].isoformat()}, headers=HEADERS)
    first = early.json()["rows"]
    assert len(first) == 4 and first[0]["ema_8"] is None and first[0]["rsi_14"] is None


def test_fibonacci_indicators_and_parquet(client: TestClient) -> None:
    r = client.get(
        "/v1/indicators/AAPL", params={"interval": "8d", "format": "parquet"}, headers=HEADERS
    )
    assert r.status_code == 200 and r.headers["content-type"] == "application/vnd.apache.parquet"
    table = pq.read_table(io.BytesIO(r.content))
    assert table.schema.names == [f.name for f in GOLD_FIB][1:]
    done = table["complete"].to_pylist()
    assert table.num_rows > 20 and all(done[:-1]) and not done[-1]  # the last 8 sessions run on
    as_json = client.get("/v1/indicators/AAPL", params={"interval": "8d"}, headers=HEADERS)
    assert [r["close"] for r in as_json.json()["rows"]] == table["close"].to_pylist()
    by_accept = client.get(
        "/v1/indicators/AAPL",
        params={"interval": "8d"},
        headers={**HEADERS, "Accept": "application/vnd.apache.parquet"},
    )
    assert by_accept.content == r.content


def test_a_cross_section_of_every_symbol(client: TestClient) -> None:
    day = DAYS[150].isoformat()
    r = client.get("/v1/indicators", params={"date": day}, headers=HEADERS)
    assert r.status_code == 200, r.text
    rows = r.json()["rows"]
    assert [x["symbol"] for x in rows] == ["AAPL", "MSFT"] and all(x["date"] == day for x in rows)
    fib = client.get(
        "/v1/indicators",
        params={"date": day, "interval": "34d", "format": "parquet"},
        headers=HEADERS,
    )
    table = pq.read_table(io.BytesIO(fib.content))
    assert table["symbol"].to_pylist() == ["AAPL", "MSFT"]
    for start, end in zip(
        table["start_date"].to_pylist(), table["end_date"].to_pylist(), strict=True
    ):
        assert start <= DAYS[150] <= end
    empty = client.get("/v1/indicators", params={"date": "1990-01-02"}, headers=HEADERS)
    assert empty.status_code == 200 and empty.json()["rows"] == []


def test_errors_as_for_bars(client: TestClient) -> None:
    assert client.get("/v1/indicators/AAPL").status_code == 401
    assert client.get("/v1/indicators", params={"date": "2024-01-02"}).status_code == 401
    for params in ({"interval": "4d"}, {"start": "2024-13-01"}, {"limit": 0}, {"format": "csv"}):
        r = client.get("/v1/indicators/AAPL", params=params, headers=HEADERS)
        assert r.status_code == 400 and r.json()["detail"], params
    r = client.get(
        "/v1/indicators/AAPL", params={"start": "2024-05-01", "end": "2024-04-01"}, headers=HEADERS
    )
    assert r.status_code == 200 and r.json()["rows"] == []  # an empty range, as for /v1/bars
    assert client.get("/v1/indicators/NOPE", headers=HEADERS).status_code == 404
    assert client.get("/v1/indicators/a$b", headers=HEADERS).status_code == 400
    assert client.get("/v1/indicators", headers=HEADERS).status_code == 400  # date is required
    known = client.get("/v1/indicators/ONE", params={"start": "2025-01-02"}, headers=HEADERS)
    assert known.status_code == 200 and known.json()["rows"] == []
