"""The serving machinery over real Postgres, Redis and a local lake: strict input, problem+json,
formats, caching, pagination, merged sources, new routes, keys, limits, sockets and metrics.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from api import shared
from api.formats import Format, from_accept
from api.hub import ALERTS_CHANNEL
from api.main import create_app
from api.params import unknown_parameters
from api.problems import ECHO_LIMIT
from api.resources import Resources
from api.responses import Stored
from api.routes.stream import hub_of
from core import layout
from core.lake import Lake
from core.schemas import SPLITS
from core.settings import ApiSettings
from core.stores import postgres
from core.stores.redis import LiveStore, connect
from tests.api_market import HEADERS, KEY, OLD, RECENT, daily

pytestmark = pytest.mark.unit


PROBLEM = "application/problem+json"


def problem(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body: dict[str, Any] = r.json()
    assert body["status"] == status and body["title"] and isinstance(body["detail"], str)
    return body


# -- strict input and problems -------------------------------------------------------------------
def test_unknown_and_repeated_parameters_are_named(client: TestClient) -> None:
    body = problem(client.get("/v1/bars/AAPL?frobnicate=1&cursr=x", headers=HEADERS), 400)
    assert "frobnicate" in body["detail"] and "cursr" in body["detail"]
    assert body["type"].endswith("/invalid-parameter")
    assert body["instance"] == "/v1/bars/AAPL" and body["request_id"]
    body = problem(client.get("/v1/latest/AAPL?cursor=abc", headers=HEADERS), 400)
    assert "cursor" in body["detail"]  # this route does not page: said, not ignored
    body = problem(client.get("/v1/bars/AAPL?limit=1&limit=2", headers=HEADERS), 400)
    assert "more than once: limit" in body["detail"]
    problem(client.get("/health?verbose=1"), 400)
    assert unknown_parameters(["a", "b", "b"], frozenset({"b"})) == (["a"], ["b"])


def test_dates_are_iso_only_and_errors_echo_little(client: TestClient) -> None:
    for value in ("1420070400", "2015-1-5", "2015-13-01", "05/01/2015", "2015-01-05T00:00:00"):
        problem(client.get("/v1/bars/AAPL", params={"start": value}, headers=HEADERS), 400)
    bars = client.get("/v1/bars/AAPL", params={"start": "2015-01-06"}, headers=HEADERS).json()
    assert bars["bars"][0]["date"] == "2015-01-06"
    long = "Z" * 5000
    for url, params in (
        ("/v1/bars/AAPL", {"start": long}),
        ("/v1/bars/AAPL", {long: "1"}),
        ("/v1/bars", {"date": "2015-01-05", "symbols": "A," + long}),
        (f"/v1/bars/{long}", {}),
    ):
        r = client.get(url, params=params, headers=HEADERS)
        assert r.status_code == 400
        assert "Z" * (ECHO_LIMIT + 1) not in r.text, url


def test_every_error_is_a_problem(client: TestClient) -> None:
    problem(client.get("/v1/bars/AAPL"), 401)
    problem(client.get("/v1/nowhere", headers=HEADERS), 404)
    problem(client.post("/v1/bars/AAPL", headers=HEADERS), 405)
    problem(client.get("/v1/bars/NOPE", headers=HEADERS), 404)
    problem(client.get("/v1/bars/AAPL", params={"interval": "2d"}, headers=HEADERS), 400)


def test_openapi_documents_patterns_and_problem_statuses(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    params = {p["name"]: p for p in doc["paths"]["/v1/bars/{symbol}"]["get"]["parameters"]}
    assert params["symbol"]["schema"]["maxLength"] == 15 and params["symbol"]["schema"]["pattern"]
    assert params["start"]["schema"]["anyOf"][0]["pattern"]
    for path, item in doc["paths"].items():
        for op in item.values():
            codes = op["responses"]
            assert "422" not in codes and "400" in codes, path
            if path.startswith("/v1/"):
                assert {"401", "403", "429", "503"} <= set(codes), path
            for code, resp in codes.items():
                if int(code) >= 400 and path != "/health" and path != "/readyz":
                    assert list(resp["content"]) == [PROBLEM], (path, code)


# -- formats, caching, pagination --------------------------------------------------------------
def test_accept_negotiation() -> None:
    assert from_accept(None) is Format.json
    assert from_accept("text/csv") is Format.csv
    assert from_accept("text/html,application/xhtml+xml,*/*;q=0.8") is Format.json
    assert from_accept("application/json;q=0.5, application/vnd.apache.parquet") is Format.parquet
    assert from_accept("application/vnd.apache.arrow.stream") is Format.arrow
    assert from_accept("application/xml") is None
    assert from_accept("text/csv;q=0") is None


def test_formats_carry_the_same_rows(client: TestClient) -> None:
    url, params = "/v1/bars/AAPL", {"start": "2015-01-01"}
    rows = client.get(url, params=params, headers=HEADERS).json()["bars"]
    csv = client.get(url, params={**params, "format": "csv"}, headers=HEADERS)
    assert csv.headers["content-type"].startswith("text/csv")
    table = pacsv.read_csv(io.BytesIO(csv.content))
    assert table.num_rows == len(rows) and table.column_names == list(rows[0])
    for how in ({"format": "parquet"}, {"accept": "application/vnd.apache.parquet"}):
        params_h = {**params, **({"format": how["format"]} if "format" in how else {})}
        headers = {**HEADERS, **({"Accept": how["accept"]} if "accept" in how else {})}
        r = client.get(url, params=params_h, headers=headers)
        assert r.headers["content-type"] == "application/vnd.apache.parquet"
        t = pq.read_table(io.BytesIO(r.content))
        assert t.to_pylist()[0]["open"] == rows[0]["open"]
        assert b"served_by" in t.schema.metadata[b"condvest"]
    r = client.get(url, params={**params, "format": "arrow"}, headers=HEADERS)
    t = pa.ipc.open_stream(io.BytesIO(r.content)).read_all()
    assert [d.isoformat() for d in t["date"].to_pylist()] == [b["date"] for b in rows]
    problem(client.get(url, headers={**HEADERS, "Accept": "application/xml"}), 406)
    problem(client.get(url, params={"format": "xml"}, headers=HEADERS), 400)


def test_etag_304_cache_control_and_gzip(client: TestClient) -> None:
    old = {"start": OLD[0].isoformat(), "end": OLD[-1].isoformat()}
    r = client.get("/v1/bars/AAPL", params=old, headers=HEADERS)
    assert r.headers["Cache-Control"].startswith("private, max-age=")
    etag = r.headers["ETag"]
    again = client.get("/v1/bars/AAPL", params=old, headers={**HEADERS, "If-None-Match": etag})
    assert again.status_code == 304 and again.headers["ETag"] == etag and not again.content
    recent = client.get("/v1/bars/AAPL", headers=HEADERS)
    assert recent.headers["Cache-Control"] == "private, no-cache"
    big = client.get("/v1/bars/AAPL", headers={**HEADERS, "Accept-Encoding": "gzip"})
    assert big.headers["X-Request-ID"]
    metrics = client.get("/metrics").text
    assert 'condvest_api_cache_lookups_total{cache="responses",result="hit"}' in metrics


def test_answers_are_shared_by_workers_through_redis(settings: ApiSettings) -> None:
    old = {"start": OLD[0].isoformat(), "end": OLD[-1].isoformat()}
    with TestClient(create_app(settings)) as one, TestClient(create_app(settings)) as two:
        made = one.get("/v1/bars/AAPL", params=old, headers=HEADERS)
        assert made.status_code == 200
        # another worker (its own empty cache) answers from the shared copy, headers and all
        got = two.get("/v1/bars/AAPL", params=old, headers=HEADERS)
        assert got.content == made.content and got.headers["ETag"] == made.headers["ETag"]
        assert got.headers["Cache-Control"] == made.headers["Cache-Control"]
        assert got.headers["X-Served-By"] == made.headers["X-Served-By"]
        metrics = two.get("/metrics").text
    assert 'condvest_api_cache_lookups_total{cache="shared",result="hit"}' in metrics
    alone = settings.model_copy(update={"api_shared_answers": False})
    with TestClient(create_app(alone)) as three:
        assert three.get("/v1/bars/AAPL", params=old, headers=HEADERS).content == made.content


def test_repeated_requests_skip_routing_but_not_keys_limits_or_etags(
    settings: ApiSettings,
) -> None:
    limited = settings.model_copy(update={"api_rate_limit": 3, "api_shared_answers": False})
    old = {"start": OLD[0].isoformat(), "end": OLD[-1].isoformat()}
    with TestClient(create_app(limited)) as c:
        first = c.get("/v1/bars/AAPL", params=old, headers=HEADERS)
        again = c.get("/v1/bars/AAPL", params=old, headers={**HEADERS, "Accept-Encoding": "gzip"})
        assert again.content == first.content and again.headers["ETag"] == first.headers["ETag"]
        assert again.headers["Cache-Control"] == first.headers["Cache-Control"]
        assert again.headers["RateLimit-Remaining"] == "1" and again.headers["X-Request-ID"]
        assert again.headers["Content-Encoding"] == "gzip"
        problem(c.get("/v1/bars/AAPL", params=old, headers={"X-API-Key": "nope"}), 401)
        problem(c.get("/v1/bars/AAPL", params=old), 401)
        etag = first.headers["ETag"]
        cond = c.get("/v1/bars/AAPL", params=old, headers={**HEADERS, "If-None-Match": etag})
        assert cond.status_code == 304 and cond.headers["RateLimit-Remaining"] == "0"
        over = problem(c.get("/v1/bars/AAPL", params=old, headers=HEADERS), 429)
        assert over["instance"] == "/v1/bars/AAPL" and over["request_id"]
        assert "3 requests per minute" in over["detail"]
        metrics = c.get("/metrics").text
    assert 'condvest_api_cache_lookups_total{cache="fastpath",result="hit"}' in metrics
    route = 'route="/v1/bars/{symbol}",status="429"'
    assert route in metrics  # labelled by its route, as on the full path


def _within_one_window(need_s: float) -> None:
    """Wait for a rate-limit window (a wall-clock minute) with ``need_s`` seconds left in it."""
    if (left := 60 - time.time() % 60) < need_s:
        time.sleep(left + 0.1)


def test_an_answer_in_use_is_renewed_before_it_expires(settings: ApiSettings) -> None:
    """An answer reaching the present is read again in the background once half its time in
    the cache is gone: callers keep the copy still true, then get the new one before the old
    expires (no caller waits for the read), and the renewal is not counted against the key."""
    ttl = 6.0
    fresh = settings.model_copy(
        update={"api_fresh_cache_s": ttl, "api_rate_limit": 100, "api_shared_answers": False}
    )
    dsn = settings.database_url.get_secret_value()  # type: ignore[union-attr]
    with postgres.connect(dsn) as conn:
        postgres.upsert_daily(conn, daily("RENEW", RECENT, "rest", 5.0))
        conn.commit()
    _within_one_window(ttl + 4.0)  # the count restarts at a minute's end: not across one
    with TestClient(create_app(fresh)) as c:
        sent = time.monotonic()
        first = c.get("/v1/bars/RENEW", headers=HEADERS)
        assert first.headers["Cache-Control"] == "private, no-cache"
        assert c.get("/v1/bars/RENEW", headers=HEADERS).content == first.content
        with postgres.connect(dsn) as conn:
            postgres.upsert_daily(
                conn, daily("RENEW", RECENT, "rest", 7.0, dt.datetime.now(dt.UTC))
            )
            conn.commit()
        time.sleep(ttl * 0.5 + 0.2 - (time.monotonic() - sent))
        due = c.get("/v1/bars/RENEW", headers=HEADERS)
        assert due.content == first.content  # still true: served, and renewed behind it
        seen = 3
        while time.monotonic() - sent < ttl - 0.1:
            renewed = c.get("/v1/bars/RENEW", headers=HEADERS)
            seen += 1
            if renewed.content != first.content:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the answer was not renewed before it expired")
        assert renewed.json()["bars"][0]["close"] != first.json()["bars"][0]["close"]
        assert renewed.headers["RateLimit-Remaining"] == str(100 - seen)


def test_a_limit_counted_in_batches_still_stops_at_the_limit(settings: ApiSettings) -> None:
    limited = settings.model_copy(update={"api_rate_limit": 120})
    _within_one_window(10.0)
    with TestClient(create_app(limited)) as c:
        codes = [c.get("/v1/bars/AAPL?limit=1", headers=HEADERS).status_code for _ in range(125)]
    assert codes == [200] * 120 + [429] * 5


def test_shared_answers_expire_on_the_wall_clock() -> None:
    stored = Stored(b"body", 'W/"x"', "application/json", {"Cache-Control": "no-cache"}, 0.0)
    raw = shared.pack(stored, ttl=30.0, now=1000.0)
    back = shared.unpack(raw, now=1010.0)
    assert back is not None and (back.body, back.etag, back.headers) == (
        b"body", 'W/"x"', {"Cache-Control": "no-cache"},
    )  # fmt: skip
    assert shared.unpack(raw, now=1031.0) is None
    assert shared.unpack(b"\x00\x00\x00\x09not json") is None
    assert shared.redis_key("p:", ("/a", (), "json", None)).startswith("p:answer:")


def test_silver_answers_are_kept_until_silver_changes(
    client: TestClient, local_lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("api.resources.GENERATION_TTL_S", 0.0)
    checkpoint = layout.silver_checkpoint(3)
    local_lake.write_json(checkpoint, {"run": 1})
    url = "/v1/bars/FIB?interval=3d"
    first = client.get(url, headers=HEADERS).json()["bars"]
    month = layout.silver_file(3, 2015, 1)
    table = local_lake.read_table(month)
    changed = table.set_column(
        table.schema.get_field_index("close"), "close", pa.array([9.0] * table.num_rows)
    )
    local_lake.write_table(month, changed)
    assert client.get(url, headers=HEADERS).json()["bars"] == first  # same silver state: cached
    local_lake.write_json(checkpoint, {"run": 2})  # a resample run ends by writing this
    assert client.get(url, headers=HEADERS).json()["bars"][0]["close"] == 9.0


def test_cursor_pages_through_everything(client: TestClient) -> None:
    full = client.get("/v1/bars/AAPL", headers=HEADERS).json()["bars"]
    seen: list[dict[str, Any]] = []
    url: str | None = "/v1/bars/AAPL?page_size=3"
    pages = 0
    while url:
        r = client.get(url, headers=HEADERS)
        body = r.json()
        seen += body["bars"]
        url = body["next"]
        pages += 1
        if url:
            assert r.headers["Link"] == f'<{url}>; rel="next"'
    assert seen == full and pages == 3
    limited = client.get("/v1/bars/AAPL?limit=5&page_size=2", headers=HEADERS).json()
    assert [b["date"] for b in limited["bars"]] == [d.isoformat() for d in OLD[3:]]
    rest = client.get(limited["next"], headers=HEADERS).json()
    assert [b["date"] for b in rest["bars"]] == [d.isoformat() for d in RECENT[:2]]
    problem(client.get("/v1/bars/AAPL?cursor=bm90LWEtY3Vyc29y", headers=HEADERS), 400)
    problem(client.get("/v1/bars/AAPL?cursor=2015-02-30", headers=HEADERS), 400)
    problem(client.get("/v1/bars?date=2015-01-05&cursor=A%20B", headers=HEADERS), 400)


def test_a_row_missing_in_one_source_comes_from_the_other(
    client: TestClient, settings: ApiSettings, local_lake: Lake
) -> None:
    # GAPS: the lake lacks the last recent day, Postgres lacks the first.
    local_lake.write_table(layout.consolidated("GAPS"), daily("GAPS", RECENT[:2], "rest", 5.0))
    with postgres.connect(settings.database_url.get_secret_value()) as conn:  # type: ignore[union-attr]
        postgres.upsert_daily(conn, daily("GAPS", RECENT[1:], "rest", 5.0))
        conn.commit()
    r = client.get("/v1/bars/GAPS", headers=HEADERS)
    body = r.json()
    assert [b["date"] for b in body["bars"]] == [d.isoformat() for d in RECENT]
    assert sum(body["served_by"].values()) == 3 and set(body["served_by"]) == {"lake", "postgres"}


# -- cross-section, symbols, latest ----------------------------------------------------------------
def test_cross_section_of_one_date(client: TestClient) -> None:
    r = client.get("/v1/bars", params={"date": RECENT[1].isoformat()}, headers=HEADERS)
    body = r.json()
    assert [b["symbol"] for b in body["bars"]] == ["AAPL", "PGONLY"]
    assert body["bars"][0]["open"] == 41.0 and body["bars"][1]["open"] == 61.0
    r = client.get(
        "/v1/bars", params={"date": OLD[1].isoformat(), "symbols": "msft,AAPL"}, headers=HEADERS
    )
    assert [(b["symbol"], b["open"]) for b in r.json()["bars"]] == [("AAPL", 11.0), ("MSFT", 51.0)]
    r = client.get(
        "/v1/bars",
        params={"date": "2015-01-27", "interval": "3d", "format": "csv"},
        headers=HEADERS,
    )
    table = pacsv.read_csv(io.BytesIO(r.content))
    assert table["symbol"].to_pylist() == ["FIB", "MSFT"]
    paged = client.get(
        "/v1/bars", params={"date": RECENT[1].isoformat(), "page_size": "1"}, headers=HEADERS
    ).json()
    assert [b["symbol"] for b in paged["bars"]] == ["AAPL"]
    assert [b["symbol"] for b in client.get(paged["next"], headers=HEADERS).json()["bars"]] == [
        "PGONLY"
    ]
    problem(client.get("/v1/bars", headers=HEADERS), 400)  # a date is required


@pytest.fixture()
def with_metadata(settings: ApiSettings, local_lake: Lake) -> None:
    rows = [
        ("AAPL", "Apple Inc.", "CS", "XNAS", True),
        ("MSFT", "Microsoft Corp", "CS", "XNAS", True),
        ("SPY", "SPDR S&P 500 ETF", "ETF", "ARCX", True),
        ("GONE", "Gone 100% Ltd", "CS", "XNYS", False),
    ]
    with psycopg.connect(settings.database_url.get_secret_value()) as conn:  # type: ignore[union-attr]
        for r in rows:
            conn.execute(
                "INSERT INTO symbol_metadata (symbol, name, type, exchange, active)"
                " VALUES (%s, %s, %s, %s, %s)",
                r,
            )
    at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    splits = pa.Table.from_pylist(
        [
            {"symbol": "AAPL", "execution_date": dt.date(2020, 8, 31), "split_from": 1.0,
             "split_to": 4.0, "adjustment_type": "forward_split", "ingested_at": at},
            {"symbol": "MSFT", "execution_date": dt.date(2003, 2, 18), "split_from": 1.0,
             "split_to": 2.0, "adjustment_type": "forward_split", "ingested_at": at},
        ],
        schema=SPLITS,
    )  # fmt: skip
    local_lake.write_table(layout.reference_splits(), splits)


@pytest.mark.usefixtures("with_metadata")
def test_symbols_list_and_detail(client: TestClient) -> None:
    def names(**params: str) -> list[str]:
        r = client.get("/v1/symbols", params=params, headers=HEADERS)
        assert r.status_code == 200, r.text
        return [s["symbol"] for s in r.json()["symbols"]]

    assert names() == ["AAPL", "GONE", "MSFT", "SPY"]
    assert names(active="true") == ["AAPL", "MSFT", "SPY"]
    assert names(type="ETF") == ["SPY"]
    assert names(exchange="XNAS", active="true") == ["AAPL", "MSFT"]
    assert names(q="micro") == ["MSFT"]
    assert names(q="a") == ["AAPL"]  # ticker prefix, or part of a name
    assert names(q="100%") == ["GONE"]  # LIKE wildcards are literal
    page = client.get("/v1/symbols?page_size=3", headers=HEADERS).json()
    assert len(page["symbols"]) == 3
    assert [s["symbol"] for s in client.get(page["next"], headers=HEADERS).json()["symbols"]] == [
        "SPY"
    ]
    detail = client.get("/v1/symbols/aapl", headers=HEADERS).json()
    assert detail["name"] == "Apple Inc." and detail["active"] is True
    assert (
        detail["first_date"] == OLD[0].isoformat() and detail["last_date"] == RECENT[-1].isoformat()
    )
    assert detail["splits"] == [
        {"execution_date": "2020-08-31", "split_from": 1.0, "split_to": 4.0,
         "adjustment_type": "forward_split"}
    ]  # fmt: skip
    pg_only = client.get("/v1/symbols/PGONLY", headers=HEADERS).json()
    assert pg_only["name"] is None and pg_only["first_date"] == RECENT[0].isoformat()
    problem(client.get("/v1/symbols/NOPE", headers=HEADERS), 404)
    # The cross-section is split-adjusted like silver: AAPL's 4-for-1 of 2020 quarters 2015.
    day = {"date": OLD[1].isoformat(), "symbols": "AAPL"}
    section = client.get("/v1/bars", params=day, headers=HEADERS).json()
    assert section["adjusted"] == "split"
    assert section["bars"][0]["open"] == 11.0 / 4 and section["bars"][0]["volume"] == 2000.0 * 4
    problem(client.get("/v1/symbols?active=maybe", headers=HEADERS), 400)


def test_latest_of_many(client: TestClient, settings: ApiSettings) -> None:
    store = LiveStore(connect(settings.redis_url.get_secret_value()), settings.redis_prefix)  # type: ignore[union-attr]
    store.set_live({"AAPL": {"price": 1.0}}, {"MSFT": {"close": 2.0}}, publish=False)
    r = client.get("/v1/latest", params={"symbols": "aapl,MSFT,NOPE"}, headers=HEADERS)
    body = r.json()
    assert [x["symbol"] for x in body["latest"]] == ["AAPL", "MSFT"]
    assert body["latest"][1]["bar"] == {"symbol": "MSFT", "close": 2.0}
    assert body["missing"] == ["NOPE"]
    store.r.close()


# -- keys, scopes, limits --------------------------------------------------------------------------
def keys_cli(settings: ApiSettings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"DATABASE_URL": settings.database_url.get_secret_value(), "PATH": "/usr/bin:/bin"}  # type: ignore[union-attr]
    return subprocess.run(
        [sys.executable, "-m", "api.keys", *args], env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip


def test_keys_are_created_listed_scoped_limited_and_revoked(settings: ApiSettings) -> None:
    made = keys_cli(settings, "create", "--name", "bt", "--scopes", "read", "--rate-limit", "3")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    key_id = made.stdout.split()[1]
    assert key.startswith("cv_") and len(key) > 40
    listed = keys_cli(settings, "list")
    assert key_id in listed.stdout and "bt" in listed.stdout and key not in listed.stdout
    with psycopg.connect(settings.database_url.get_secret_value()) as conn:  # type: ignore[union-attr]
        stored = conn.execute("SELECT key_hash FROM api_keys WHERE id = %s", (key_id,)).fetchone()
    assert stored is not None and key.encode() not in bytes(stored[0])
    streamer = keys_cli(settings, "create", "--name", "ws", "--scopes", "stream").stdout
    assert keys_cli(settings, "create", "--name", "bt").returncode == 1  # active name taken
    assert keys_cli(settings, "create", "--name", "x", "--scopes", "admin").returncode == 2
    assert keys_cli(settings, "revoke", "nobody").returncode == 1

    app = create_app(settings.model_copy(update={"api_key_cache_s": 0.0}))
    with TestClient(app) as c:
        url = "/v1/bars/AAPL?limit=1"
        ok = [c.get(url, headers={"X-API-Key": key}) for _ in range(3)]
        assert [r.status_code for r in ok] == [200, 200, 200]
        assert ok[0].headers["RateLimit-Limit"] == "3"
        assert [r.headers["RateLimit-Remaining"] for r in ok] == ["2", "1", "0"]
        over = problem(c.get(url, headers={"X-API-Key": key}), 429)
        assert "3 requests per minute" in over["detail"]
        r = c.get(url, headers={"X-API-Key": key})
        assert 1 <= int(r.headers["Retry-After"]) <= 60 and r.headers["RateLimit-Remaining"] == "0"
        stream_key = streamer.strip().splitlines()[-1]
        problem(c.get(url, headers={"X-API-Key": stream_key}), 403)
        assert keys_cli(settings, "revoke", "bt").returncode == 0
        problem(c.get(url, headers={"X-API-Key": key}), 401)


# -- WebSocket ------------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_stream_subscribes_by_message_on_one_shared_subscription(
    client: TestClient, settings: ApiSettings
) -> None:
    store = LiveStore(connect(settings.redis_url.get_secret_value()), settings.redis_prefix)  # type: ignore[union-attr]
    aapl, msft = store.bar_channel("AAPL"), store.bar_channel("MSFT")
    with (
        client.websocket_connect(f"/v1/stream?symbols=AAPL&api_key={KEY}") as a,
        client.websocket_connect("/v1/stream?symbols=MSFT", headers=HEADERS) as b,
    ):
        assert a.receive_json() == {"type": "subscribed", "symbols": ["AAPL"]}
        assert b.receive_json() == {"type": "subscribed", "symbols": ["MSFT"]}
        # one subscription per process, not per socket, and only to the symbols followed
        assert store.r.pubsub_numsub(aapl, msft) == [(aapl, 1), (msft, 1)]
        assert store.r.pubsub_numpat() == 0
        a.send_json({"action": "subscribe", "symbols": "msft"})
        assert a.receive_json() == {"type": "subscribed", "symbols": ["AAPL", "MSFT"]}
        a.send_json({"action": "unsubscribe", "symbols": ["AAPL"]})
        assert a.receive_json() == {"type": "subscribed", "symbols": ["MSFT"]}
        a.send_json({"action": "ping"})
        assert a.receive_json() == {"type": "pong"}
        store.set_bar("AAPL", {"close": 1.0})
        store.set_bar("MSFT", {"close": 2.0})
        assert a.receive_json() == {"type": "bar", "data": {"symbol": "MSFT", "close": 2.0}}
        assert b.receive_json() == {"type": "bar", "data": {"symbol": "MSFT", "close": 2.0}}
        a.send_text("not json")
        with pytest.raises(WebSocketDisconnect) as info:
            a.receive_json()
        assert info.value.code == 1008 and "JSON" in info.value.reason
    store.r.close()


@pytest.mark.timeout(60)
def test_a_socket_on_every_symbol_and_one_on_a_few_each_get_an_update_once(
    client: TestClient, settings: ApiSettings
) -> None:
    store = LiveStore(connect(settings.redis_url.get_secret_value()), settings.redis_prefix)  # type: ignore[union-attr]
    with (
        client.websocket_connect("/v1/stream?symbols=*", headers=HEADERS) as every,
        client.websocket_connect("/v1/stream?symbols=MSFT", headers=HEADERS) as few,
    ):
        assert every.receive_json()["symbols"] == ["*"]
        assert few.receive_json()["symbols"] == ["MSFT"]
        assert store.r.pubsub_numpat() == 1
        store.set_bar("MSFT", {"close": 2.0})
        store.set_bar("IBM", {"close": 3.0})
        assert every.receive_json()["data"]["symbol"] == "MSFT"
        assert every.receive_json()["data"]["symbol"] == "IBM"  # not MSFT a second time
        assert few.receive_json()["data"]["symbol"] == "MSFT"
        few.send_json({"action": "ping"})
        assert few.receive_json() == {"type": "pong"}  # IBM never reached it, nor MSFT twice
    store.r.close()


@pytest.mark.timeout(60)
def test_stream_caps_sockets_per_key(settings: ApiSettings) -> None:
    app = create_app(settings.model_copy(update={"api_ws_per_key": 1}))
    with TestClient(app) as c, c.websocket_connect("/v1/stream", headers=HEADERS) as first:
        assert first.receive_json()["type"] == "subscribed"
        with (
            pytest.raises(WebSocketDisconnect) as info,
            c.websocket_connect("/v1/stream", headers=HEADERS) as second,
        ):
            second.receive_json()
        assert info.value.code == 1008 and "already holds 1" in info.value.reason
    with TestClient(app) as c, c.websocket_connect("/v1/stream", headers=HEADERS) as again:
        assert again.receive_json()["type"] == "subscribed"  # the closed socket was released
    for url in (
        "/v1/stream?bogus=1",
        "/v1/stream?api_key=nope",
        f"/v1/stream?api_key={KEY}&symbols=1X",
    ):
        with (
            TestClient(app) as c,
            pytest.raises(WebSocketDisconnect) as info,
            c.websocket_connect(url) as ws,
        ):
            ws.receive_json()
        assert info.value.code == 1008 and info.value.reason


@pytest.mark.timeout(60)
def test_sockets_that_connect_together_share_the_one_hub(settings: ApiSettings) -> None:
    """Each would otherwise read every alert and bar update on a subscription of its own."""

    async def connect_together() -> None:
        res = Resources(settings)
        try:
            hubs = await asyncio.gather(*(hub_of(res) for _ in range(8)))
            assert all(h is hubs[0] for h in hubs)
            await hubs[0].ready()
            r = await res.async_redis()
            channel = settings.redis_prefix + ALERTS_CHANNEL
            assert await r.pubsub_numsub(channel) == [(channel, 1)]
        finally:
            await res.aclose()
            res.close()

    asyncio.run(connect_together())


# -- operations ------------------------------------------------------------------------------------
def test_livez_readyz_metrics_and_request_ids(client: TestClient) -> None:
    assert client.get("/livez").json() == {"status": "ok", "checks": {}}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["postgres"] == "ok"
    r = client.get("/v1/bars/AAPL?limit=1", headers={**HEADERS, "X-Request-ID": "trace-12345678"})
    assert r.headers["X-Request-ID"] == "trace-12345678"
    odd = client.get("/livez", headers={"X-Request-ID": "bad id with spaces"})
    assert odd.headers["X-Request-ID"] != "bad id with spaces"
    text = client.get("/metrics").text
    assert 'route="/v1/bars/{symbol}",status="200"' in text
    assert "condvest_api_request_duration_seconds_bucket" in text
    assert "condvest_api_websockets_open" in text


@pytest.fixture()
def cors_client(settings: ApiSettings) -> Iterator[TestClient]:
    app = create_app(settings.model_copy(update={"api_cors_origins": "https://app.example"}))
    with TestClient(app) as c:
        yield c


def test_cors_origins_are_a_setting(cors_client: TestClient) -> None:
    r = cors_client.options(
        "/v1/bars/AAPL",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "GET",
                 "Access-Control-Request-Headers": "X-API-Key"},
    )  # fmt: skip
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    r = cors_client.get("/livez", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers
