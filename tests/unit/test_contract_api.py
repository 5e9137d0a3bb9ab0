"""Contract review: the API on dotted/dashed tickers over a lake built by the batch jobs."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from batch import consolidate, resample
from core import calendar
from core.lake import Lake
from core.stores import postgres
from tests.api_market import api_settings
from tests.batch_support import read_silver, sessions, simple_rows, write_fragment

pytestmark = pytest.mark.unit
KEY = "k-contract"
HEADERS = {"X-API-Key": KEY}
DAYS = sessions()[calendar.session_index(dt.date(2015, 1, 26)) :][:10]


@pytest.fixture()
def client(
    local_lake: Lake, pg_url: str, redis_server_url: str, redis_prefix: str
) -> Iterator[TestClient]:
    for symbol in ("BRK.B", "BF-A"):
        for r in simple_rows(symbol, DAYS):
            write_fragment(local_lake, [r])
    assert consolidate.run(local_lake, workers=1).ok
    assert resample.run(local_lake, workers=1, intervals=(3,)).ok
    with postgres.connect(pg_url) as conn:
        postgres.migrate(conn)
    settings = api_settings(local_lake, pg_url, redis_server_url, redis_prefix, KEY)
    with TestClient(create_app(settings)) as c:
        yield c


def _bars(client: TestClient, symbol: str, **params: Any) -> list[dict[str, Any]]:
    r = client.get(f"/v1/bars/{symbol}", params=params, headers=HEADERS)
    assert r.status_code == 200, r.text
    out: list[dict[str, Any]] = r.json()["bars"]
    return out


def test_dotted_and_dashed_tickers_in_any_case(client: TestClient, local_lake: Lake) -> None:
    for asked, symbol in (("BRK.B", "BRK.B"), ("brk.b", "BRK.B"), ("bf-a", "BF-A")):
        daily = _bars(client, asked)
        assert [b["date"] for b in daily] == [d.isoformat() for d in DAYS], asked
        fib = _bars(client, asked, interval="3d")
        silver = [b for m in sorted(read_silver(local_lake, 3).items()) for b in m[1]]
        assert [b["start_date"] for b in fib] == [
            b[1].isoformat()  # type: ignore[attr-defined]
            for b in silver
            if b[0] == symbol
        ]
    assert client.get("/v1/bars/BRK%2FB", headers=HEADERS).status_code in (400, 404)
    assert client.get("/v1/bars/..%2FBRK.B", headers=HEADERS).status_code in (400, 404)
