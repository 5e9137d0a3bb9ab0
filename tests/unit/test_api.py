"""The API over a hand-written local lake, a real Postgres schema and a real Redis prefix."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from starlette.websockets import WebSocketDisconnect

from api.auth import InsecureSettingsError, key_matches
from api.daily import lake_history, merge_sources, postgres_may_hold
from api.fibonacci import history_span
from api.main import create_app
from core import layout
from core.lake import Lake
from core.settings import ApiSettings
from core.stores.redis import LiveStore, connect
from tests.api_market import FIB_DAYS, HEADERS, INGESTED, KEY, OLD, RECENT, daily

pytestmark = pytest.mark.unit


def get_bars(client: TestClient, symbol: str, **params: Any) -> list[dict[str, Any]]:
    r = client.get(f"/v1/bars/{symbol}", params=params, headers=HEADERS)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["symbol"] == symbol.upper()
    bars: list[dict[str, Any]] = body["bars"]
    return bars


# -- auth and startup ------------------------------------------------------------------------
def test_key_matches_checks_every_key() -> None:
    assert key_matches("b", ["a", "b"])
    assert not key_matches("c", ["a", "b"])
    assert not key_matches(None, ["a"])
    assert not key_matches("", [""])


def test_routes_need_a_valid_key(client: TestClient) -> None:
    for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": KEY + "x"}):
        for url in ("/v1/bars/AAPL", "/v1/latest/AAPL"):
            r = client.get(url, headers=headers)
            assert r.status_code == 401
            assert "API key" in r.json()["detail"]
    assert client.get("/v1/bars/AAPL", headers={"X-API-Key": "other"}).status_code == 200


def test_prod_refuses_placeholder_or_empty_keys() -> None:
    with pytest.raises(InsecureSettingsError):
        create_app(ApiSettings(app_env="prod"))  # the default key is the placeholder
    with pytest.raises(InsecureSettingsError):
        create_app(ApiSettings(app_env="prod", api_keys=SecretStr(" , ")))
    create_app(ApiSettings(app_env="prod", api_keys=SecretStr("a-real-secret-" + "k3y9" * 8)))


def test_health(client: TestClient, settings: ApiSettings, tmp_path: Path) -> None:
    r = client.get("/health")
    assert r.status_code == 200
    assert r.json() == {
        "status": "ok",
        "checks": {"postgres": "ok", "redis": "ok", "lake": "ok"},
    }
    fresh = settings.model_copy(update={"lake_url": (tmp_path / "fresh").as_uri()})
    r = TestClient(create_app(fresh)).get("/health")
    assert r.status_code == 200
    assert r.json()["checks"]["lake"] == "empty"
    broken = settings.model_copy(update={"lake_url": (tmp_path / "no" / "where").as_uri()})
    r = TestClient(create_app(broken)).get("/health")
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "degraded"
    assert body["checks"]["lake"].startswith("error")
    assert body["checks"]["postgres"] == "ok"


# -- daily bars --------------------------------------------------------------------------------
def test_postgres_is_asked_only_when_the_range_reaches_its_window() -> None:
    today = dt.date(2026, 6, 1)
    assert postgres_may_hold(None, today, 100)
    assert postgres_may_hold(today - dt.timedelta(days=100), today, 100)
    assert not postgres_may_hold(today - dt.timedelta(days=101), today, 100)


def test_daily_full_history_merges_lake_and_postgres(client: TestClient) -> None:
    r = client.get("/v1/bars/AAPL", params={"interval": "1d"}, headers=HEADERS)
    body = r.json()
    bars = body["bars"]
    assert [b["date"] for b in bars] == [d.isoformat() for d in OLD + RECENT]
    # data.parquet, then the newer date= fragment; the recent sessions are in both the range=
    # fragment and Postgres with the same ingested_at: the rule's tie-break (larger close) picks
    # Postgres' rows, as consolidation would.
    assert [b["source"] for b in bars] == ["flatfile"] * 5 + ["rest"] * 3
    assert bars[4]["open"] == 20.0
    assert bars[5]["open"] == 40.0
    assert body["served_by"] == {"lake": 5, "postgres": 3}
    assert r.headers["X-Served-By"] == "lake, postgres"
    assert set(bars[0]) == {
        "date", "open", "high", "low", "close", "volume", "vwap", "transactions", "source",
    }  # fmt: skip
    assert bars[0]["close"] == 10.25 and bars[0]["transactions"] == 10


def test_daily_recent_range_from_postgres(client: TestClient) -> None:
    bars = get_bars(client, "aapl", start=RECENT[0].isoformat())
    assert [b["date"] for b in bars] == [d.isoformat() for d in RECENT]
    assert [b["open"] for b in bars] == [40.0, 41.0, 42.0]  # Postgres' rows, not the lake's
    bars = get_bars(client, "AAPL", start=RECENT[0].isoformat(), limit=2)
    assert [b["date"] for b in bars] == [d.isoformat() for d in RECENT[1:]]


def test_daily_old_range_and_limit_from_lake(client: TestClient) -> None:
    bars = get_bars(client, "AAPL", start="2015-01-06", end="2015-01-08")
    assert [b["date"] for b in bars] == ["2015-01-06", "2015-01-07", "2015-01-08"]
    bars = get_bars(client, "AAPL", limit=2)
    assert [b["date"] for b in bars] == [d.isoformat() for d in RECENT[1:]]
    assert get_bars(client, "AAPL", start="2015-02-01", end="2015-01-01") == []  # empty range


def test_daily_fallbacks(client: TestClient) -> None:
    # MSFT has no rows in Postgres: a recent start falls back to the lake (empty range: []).
    assert get_bars(client, "MSFT", start=RECENT[0].isoformat()) == []
    # Fragments only: merged; the later live row does not replace the rest row.
    bars = get_bars(client, "MSFT")
    assert [(b["date"], b["source"], b["open"]) for b in bars] == [
        ("2015-01-05", "rest", 50.0),
        ("2015-01-06", "rest", 51.0),
    ]
    # In Postgres only: the lake has nothing, so Postgres answers even for the full history.
    assert [b["open"] for b in get_bars(client, "PGONLY")] == [60.0, 61.0, 62.0]


def test_merge_sources_fills_gaps_and_applies_the_rule() -> None:
    lake = daily("M", OLD[:3], "rest", 10.0)
    live = daily("M", OLD[2:3], "live", 99.0, INGESTED + dt.timedelta(days=1))  # OLD[2] differs
    only_pg = daily("M", OLD[3:4], "rest", 50.0)
    pg_rows = pa.concat_tables([lake.slice(1, 1), live, only_pg])  # OLD[1] the same row
    merged = merge_sources({"lake": lake, "postgres": pg_rows})
    assert merged["date"].to_pylist() == OLD[:4]
    assert merged["origin"].to_pylist() == ["lake", "postgres", "lake", "postgres"]
    assert merged["source"].to_pylist() == ["rest"] * 4  # a later live row never beats rest
    assert merge_sources({"lake": lake.slice(0, 0)}).num_rows == 0


def test_lake_history_merges_a_lone_fragment(local_lake: Lake) -> None:
    rest = daily("ZZ", OLD[:2], "rest", 5.0)
    newer_live = daily("ZZ", OLD[:1], "live", 7.0, INGESTED + dt.timedelta(hours=1))
    local_lake.write_table(
        layout.range_fragment("ZZ", OLD[0], OLD[1]), pa.concat_tables([rest, newer_live])
    )
    table = lake_history(local_lake, "ZZ")
    assert table["date"].to_pylist() == OLD[:2]
    assert table["source"].to_pylist() == ["rest", "rest"]
    assert lake_history(local_lake, "ZZ", start=OLD[1])["open"].to_pylist() == [6.0]


# -- Fibonacci bars ----------------------------------------------------------------------------
def test_fib_bars_from_silver(client: TestClient, local_lake: Lake) -> None:
    assert history_span(local_lake, "FIB") == (FIB_DAYS[0], FIB_DAYS[-1])
    assert history_span(local_lake, "MSFT") is None  # no data.parquet: no pruning
    bars = get_bars(client, "FIB", interval="3d")
    assert [b["start_date"] for b in bars] == ["2015-01-26", "2015-01-29", "2015-02-03"]
    assert bars[0] == {
        "start_date": "2015-01-26",
        "end_date": "2015-01-28",
        "open": 1.0,
        "high": 2.0,
        "low": 0.5,
        "close": 1.5,
        "volume": 100.0,
        "days": 3,
        "complete": True,
    }
    assert [b["complete"] for b in bars] == [True, True, False]
    bars = get_bars(client, "FIB", interval="3d", start="2015-01-27", end="2015-02-28")
    assert [b["start_date"] for b in bars] == ["2015-01-29", "2015-02-03"]
    assert [b["start_date"] for b in get_bars(client, "MSFT", interval="3d")] == ["2015-01-26"]
    assert get_bars(client, "FIB", interval="3d", limit=1)[0]["start_date"] == "2015-02-03"
    # A known symbol without silver of that interval: an empty list, not a 404.
    assert get_bars(client, "AAPL", interval="34d") == []


# -- errors ------------------------------------------------------------------------------------
ERRORS: list[tuple[str, dict[str, str], int]] = [
    ("/v1/bars/AAPL", {"interval": "2d"}, 400),
    ("/v1/bars/AAPL", {"start": "2015-13-01"}, 400),
    ("/v1/bars/AAPL", {"limit": "0"}, 400),
    ("/v1/bars/1BAD", {}, 400),
    ("/v1/bars/A$B", {}, 400),
    ("/v1/latest/A$B", {}, 400),
    ("/v1/bars/NOPE", {}, 404),
    ("/v1/bars/NOPE", {"interval": "8d"}, 404),
    ("/v1/latest/AAPL", {}, 404),
]


def test_errors(client: TestClient) -> None:
    for url, params, code in ERRORS:
        r = client.get(url, params=params, headers=HEADERS)
        assert r.status_code == code, (url, params, r.text)
        assert isinstance(r.json()["detail"], str)


def test_unreachable_postgres_is_a_503(settings: ApiSettings) -> None:
    down = settings.model_copy(
        update={
            "database_url": SecretStr("postgresql://nobody@127.0.0.1:1/none"),
            "api_pg_timeout_s": 0.5,
        }
    )
    with TestClient(create_app(down)) as client:  # the lifespan closes the pool
        # A range that ends before the cache window: the lake alone answers, Postgres is not asked.
        assert len(get_bars(client, "AAPL", end=OLD[-1].isoformat())) == 5
        r = client.get("/v1/bars/AAPL", headers=HEADERS)  # reaches the window: Postgres is needed
        assert r.status_code == 503
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["detail"] == "postgres unavailable"
        assert r.headers["Retry-After"]


def test_unreachable_redis_is_a_503_for_the_latest_quote(settings: ApiSettings) -> None:
    down = settings.model_copy(update={"redis_url": SecretStr("redis://127.0.0.1:1/0")})
    with TestClient(create_app(down)) as client:
        for url in ("/v1/latest/AAPL", "/v1/latest?symbols=AAPL"):
            r = client.get(url, headers=HEADERS)
            assert r.status_code == 503, r.text
            assert r.headers["content-type"] == "application/problem+json"
            assert r.json()["detail"] == "redis unavailable" and r.headers["Retry-After"]


# -- live ----------------------------------------------------------------------------------------
def test_latest_from_redis(client: TestClient, settings: ApiSettings) -> None:
    store = LiveStore(connect(settings.redis_url.get_secret_value()), settings.redis_prefix)  # type: ignore[union-attr]
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    minute = now.replace(second=0)
    trade = {"symbol": "AAPL", "price": 101.5, "size": 10, "ts": now.isoformat()}
    bar = {"start": minute.isoformat(), "open": 101.0, "close": 101.5, "final": False}
    final = {"symbol": "AAPL", "start": (minute - dt.timedelta(minutes=1)).isoformat(),
             "close": 100.5, "final": True, "revision": 1}  # fmt: skip
    docs = {"latest": {"AAPL": trade}, "forming": {"AAPL": bar}, "final": {"AAPL": final}}
    store.write_live(**docs, events=[], metrics={}, ttl_s=60)
    r = client.get("/v1/latest/AAPL", headers=HEADERS)
    assert r.status_code == 200
    body = r.json()
    assert body == {
        "symbol": "AAPL", "as_of": body["as_of"], "stale": False,
        "trade": trade, "bar": bar, "final": final,
    }  # fmt: skip
    assert dt.datetime.fromisoformat(body["as_of"].replace("Z", "+00:00")) == now

    old = now - dt.timedelta(hours=1)  # the feed stopped an hour ago: same data, marked stale
    store.write_live(
        latest={"MSFT": {**trade, "symbol": "MSFT", "ts": old.isoformat()}},
        forming={}, final={}, events=[], metrics={}, ttl_s=60,
    )  # fmt: skip
    body = client.get("/v1/latest/MSFT", headers=HEADERS).json()
    assert body["stale"] is True and body["bar"] is None and body["final"] is None
    ibm = {**final, "start": (minute - dt.timedelta(minutes=1)).isoformat()}
    store.write_live(
        latest={}, forming={}, final={"IBM": ibm}, events=[], metrics={}, ttl_s=60
    )  # only a final bar: as_of is its end
    body = client.get("/v1/latest/IBM", headers=HEADERS).json()
    assert dt.datetime.fromisoformat(body["as_of"].replace("Z", "+00:00")) == minute
    assert body["trade"] is None
    assert store.r.ttl(f"{settings.redis_prefix}final:IBM") > 0  # keys expire
    store.r.close()


@pytest.mark.timeout(60)
def test_stream_relays_wanted_symbols(client: TestClient, settings: ApiSettings) -> None:
    store = LiveStore(connect(settings.redis_url.get_secret_value()), settings.redis_prefix)  # type: ignore[union-attr]
    with client.websocket_connect(f"/v1/stream?symbols=aapl&api_key={KEY}") as ws:
        assert ws.receive_json() == {"type": "subscribed", "symbols": ["AAPL"]}
        store.set_bar("MSFT", {"close": 1.0})
        store.r.publish(store.channel("bars"), "not json")
        store.set_bar("AAPL", {"close": 2.0})
        assert ws.receive_json() == {"type": "bar", "data": {"symbol": "AAPL", "close": 2.0}}
    with client.websocket_connect("/v1/stream", headers=HEADERS) as ws:
        assert ws.receive_json() == {"type": "subscribed", "symbols": ["*"]}
        store.set_bar("MSFT", {"close": 3.0})
        assert ws.receive_json()["data"] == {"symbol": "MSFT", "close": 3.0}
    store.r.close()


def test_stream_refuses_bad_key_and_symbols(client: TestClient) -> None:
    for url in ("/v1/stream", "/v1/stream?api_key=wrong", f"/v1/stream?api_key={KEY}&symbols=1X"):
        with pytest.raises(WebSocketDisconnect) as info, client.websocket_connect(url) as ws:
            ws.receive_json()
        assert info.value.code == 1008


# -- entry point ---------------------------------------------------------------------------------
def test_cli_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "api", "--help"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0
    assert "--host" in done.stdout and "--port" in done.stdout
