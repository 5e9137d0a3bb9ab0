"""GET /v1/bars/{symbol}?interval=1m..4h: consolidated sessions, silver, and fragments merged on read."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api.main import create_app
from batch import intraday as job
from batch.engine import minutes
from core import calendar, layout
from core.lake import Lake
from core.settings import ApiSettings
from tests.unit.test_intraday import at, minute_table

pytestmark = pytest.mark.unit
KEY = "intraday-test-key"
OLD = [dt.date(2024, 11, 27), dt.date(2024, 11, 29)]
OPEN = dt.date(2024, 12, 2)  # fragments only: not consolidated yet


@pytest.fixture()
def client(
    local_lake: Lake, pg_url: str, redis_server_url: str, redis_prefix: str
) -> Iterator[TestClient]:
    for day in OLD:
        rows = [(s, at(day, 9, 30) + dt.timedelta(minutes=m), 10.0 + m / 100, 100.0, 10.0, 2)
                for s in ("AAPL", "MSFT") for m in range(210 if day == OLD[1] else 390)]  # fmt: skip
        local_lake.write_table(layout.minute_fragment(day, "p1"), minute_table(rows))
    minutes.run(local_lake)
    job.run(local_lake, now=dt.datetime(2024, 12, 1, tzinfo=dt.UTC))
    live = [
        ("AAPL", at(OPEN, 9, 30) + dt.timedelta(minutes=m), 20.0, 50.0, 20.0, 1) for m in range(30)
    ]
    local_lake.write_table(layout.minute_fragment(OPEN, "live1"), minute_table(live))
    settings = ApiSettings(
        lake_url=local_lake.url, database_url=SecretStr(pg_url),
        redis_url=SecretStr(redis_server_url), redis_prefix=redis_prefix, api_keys=SecretStr(KEY),
    )  # fmt: skip
    with TestClient(create_app(settings)) as c:
        yield c


def get(client: TestClient, **params: Any) -> dict[str, Any]:
    r = client.get("/v1/bars/AAPL", params=params, headers={"X-API-Key": KEY})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_minutes_by_dates_and_rfc3339_times_with_recent_fragments_merged(
    client: TestClient,
) -> None:
    body = get(client, interval="1m", start="2024-11-27", end="2024-12-02")
    bars = body["bars"]
    assert body["adjusted"] == "none"
    assert len(bars) == 390 + 210 + 30  # a half day, then the unconsolidated session
    assert bars[-1]["close"] == 20.25 and bars[-1]["source"] == "live"
    t0 = at(OLD[1], 10, 0).isoformat()
    t1 = at(OLD[1], 10, 4).isoformat()
    some = get(client, interval="1m", start=t0, end=t1)["bars"]
    assert [dt.datetime.fromisoformat(b["start"]) for b in some] == [
        at(OLD[1], 10, m) for m in range(5)
    ]
    assert (
        len(get(client, interval="1m", start="2024-11-27", end="2024-12-02", limit=7)["bars"]) == 7
    )


def test_rollups_from_silver_and_on_read(client: TestClient) -> None:
    bars = get(client, interval="4h", start="2024-11-27", end="2024-12-02")["bars"]
    ends = [dt.datetime.fromisoformat(b["end"]) for b in bars]
    assert ends == [at(OLD[0], 13, 30), at(OLD[0], 16, 0), at(OLD[1], 13, 0), at(OPEN, 13, 30)]
    assert [b["minutes"] for b in bars] == [240, 150, 210, 30]
    assert bars[-1]["complete"] is (dt.datetime.now(dt.UTC) >= calendar.session_close(OPEN))
    five = get(client, interval="5m", start="2024-12-02", end="2024-12-02")["bars"]
    assert len(five) == 6 and five[0]["volume"] == 250.0


def test_bad_interval_and_times_are_400(client: TestClient) -> None:
    for params in ({"interval": "3m"}, {"interval": "1m", "start": "yesterday"},
                   {"interval": "1m", "start": "1732890600"}):  # fmt: skip
        r = client.get("/v1/bars/AAPL", params=params, headers={"X-API-Key": KEY})
        assert r.status_code in (400, 422), params
    empty = {"interval": "5m", "start": "2024-11-29", "end": "2024-11-27"}  # an empty range
    r = client.get("/v1/bars/AAPL", params=empty, headers={"X-API-Key": KEY})
    assert r.status_code in (200, 404) and r.json().get("bars", []) == []


def test_minutes_page_by_time_cursor_in_every_format(client: TestClient) -> None:
    full = get(client, interval="1m", start="2024-11-27", end="2024-12-02")["bars"]
    seen: list[dict[str, Any]] = []
    body = get(client, interval="1m", start="2024-11-27", end="2024-12-02", page_size=200)
    while True:
        seen += body["bars"]
        if body["next"] is None:
            break
        r = client.get(body["next"], headers={"X-API-Key": KEY})
        assert r.status_code == 200, r.text
        body = r.json()
    assert seen == full
    r = client.get(
        "/v1/bars/AAPL",
        params={"interval": "5m", "start": "2024-12-02", "end": "2024-12-02", "format": "csv"},
        headers={"X-API-Key": KEY},
    )
    assert r.headers["content-type"].startswith("text/csv") and r.text.count("\n") == 7
