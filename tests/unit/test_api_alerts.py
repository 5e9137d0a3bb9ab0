"""``/v1/alerts`` on real Postgres and Redis: create, list, delete per key, invalid rules a 400
naming the field, events since a time, each change announced, alerts on the key's WebSocket."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api import principals
from api.main import create_app
from api.principals import digest
from core import alerts
from core.alert_delivery import Delivery
from core.settings import ApiSettings
from core.stores import alerts as store
from core.stores.redis import bar_channel, connect

pytestmark = pytest.mark.unit
KEY_A, KEY_B = "key-a-" + "x" * 10, "key-b-" + "y" * 10
A, B = {"X-API-Key": KEY_A}, {"X-API-Key": KEY_B}


@pytest.fixture()
def settings(pg_url: str, redis_server_url: str, redis_prefix: str, tmp_path: Any) -> ApiSettings:
    return ApiSettings(
        lake_url=str(tmp_path / "lake"),
        database_url=SecretStr(pg_url),
        redis_url=SecretStr(redis_server_url),
        redis_prefix=redis_prefix,
        api_keys=SecretStr(f"{KEY_A},{KEY_B}"),
    )


@pytest.fixture()
def client(settings: ApiSettings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


RULE = {"symbol": "aapl", "timeframe": "1m", "kind": "price_cross", "params": {"level": 200}}


def test_create_list_delete_per_key(client: TestClient, settings: ApiSettings) -> None:
    r = connect(settings.redis_url.get_secret_value())  # type: ignore[union-attr]
    notices = r.pubsub()  # type: ignore[no-untyped-call]
    notices.subscribe(settings.redis_prefix + "alert_rules")
    notices.get_message(timeout=1)
    made = client.post("/v1/alerts", json={**RULE, "cooldown": 60}, headers=A)
    assert made.status_code == 201, made.text
    rule = made.json()
    assert rule["symbol"] == "AAPL" and rule["params"] == {
        "level": 200.0, "direction": "above", "hysteresis": 0.0,
    }  # fmt: skip
    assert rule["evaluated_on"] == "trades" and rule["cooldown"] == 60 and rule["active"]
    notice = notices.get_message(ignore_subscribe_messages=True, timeout=1)
    assert notice is not None and json.loads(notice["data"]) == {
        "id": rule["id"],
        "change": "created",
    }
    daily = client.post("/v1/alerts", json={**RULE, "timeframe": "8d"}, headers=A).json()
    assert daily["evaluated_on"].startswith("the daily pipeline")
    assert [x["id"] for x in client.get("/v1/alerts", headers=A).json()["rules"]] == [
        rule["id"], daily["id"],
    ]  # fmt: skip
    assert client.get("/v1/alerts", headers=B).json()["rules"] == []
    assert client.delete(f"/v1/alerts/{rule['id']}", headers=B).status_code == 404
    assert client.delete(f"/v1/alerts/{rule['id']}", headers=A).status_code == 204
    assert client.delete(f"/v1/alerts/{rule['id']}", headers=A).status_code == 404
    assert [x["id"] for x in client.get("/v1/alerts", headers=A).json()["rules"]] == [daily["id"]]
    assert client.get("/v1/alerts").status_code == 401
    notices.close()
    r.close()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"symbol": "not a ticker"}, "symbol"),
        ({"timeframe": "2d"}, "timeframe"),
        ({"kind": "astrology"}, "kind"),
        ({"params": {}}, "params.level"),
        ({"params": {"level": 200, "direction": "up"}}, "params.direction"),
        ({"params": {"level": 200, "hysteresis": -1}}, "params.hysteresis"),
        ({"cooldown": -5}, "cooldown"),
        ({"expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
        ({"colour": "red"}, "colour"),  # unknown fields, by the request validation
    ],
)
def test_invalid_rules_are_a_400_naming_the_field(
    client: TestClient, change: dict[str, Any], field: str
) -> None:
    got = client.post("/v1/alerts", json={**RULE, **change}, headers=A)
    assert got.status_code == 400
    assert got.json()["detail"].startswith(field), got.json()


def test_events_since_and_the_websocket(
    client: TestClient, settings: ApiSettings, pg_url: str
) -> None:
    made = client.post("/v1/alerts", json=RULE, headers=A).json()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        rule = store.active_rules(conn, ids=[made["id"]])[0]
    assert rule.owner == "env_" + digest(KEY_A).hex()[:12]  # the key's id, never the key
    fired = [alerts.fire(rule, f"trade:{i}:1:x", 1_733_000_000_000 + i, 201.0) for i in range(3)]
    r = connect(settings.redis_url.get_secret_value())  # type: ignore[union-attr]
    delivery = Delivery(r, settings.redis_prefix)
    with (
        client.websocket_connect(f"/v1/stream?symbols=MSFT&api_key={KEY_A}") as ws_a,
        client.websocket_connect(f"/v1/stream?api_key={KEY_B}") as ws_b,
    ):
        assert ws_a.receive_json()["type"] == ws_b.receive_json()["type"] == "subscribed"
        with psycopg.connect(pg_url, autocommit=True) as conn:
            delivery.deliver(conn, fired[:2])
        for e in fired[:2]:
            got = ws_a.receive_json()
            assert got == {"type": "alert", "data": e.to_json()}
        r.publish(
            bar_channel(settings.redis_prefix, "MSFT"), json.dumps({"symbol": "MSFT", "close": 1.0})
        )
        assert ws_b.receive_json()["type"] == "bar"  # B's socket: bars, and none of A's alerts
    page = client.get("/v1/alerts/events", headers=A, params={"limit": 1}).json()
    assert [e["id"] for e in page["events"]] == [fired[0].id]
    rest = client.get("/v1/alerts/events", headers=A, params={"since": page["next"]}).json()
    assert [e["id"] for e in rest["events"]] == [fired[1].id]
    assert client.get("/v1/alerts/events", headers=B).json()["events"] == []
    bad = client.get("/v1/alerts/events", headers=A, params={"since": "2024-01-01T00:00:00"})
    assert bad.status_code == 400 and bad.json()["detail"].startswith("since")
    assert dt.datetime.fromisoformat(page["events"][0]["event_at"]).year == 2024
    r.close()


def test_stored_keys_own_rules_by_id_and_need_the_alerts_scope(
    client: TestClient, pg_url: str
) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        principals.migrate(conn)
        reader_id, reader = principals.create(conn, "reader", ("read",), 0)
        trader_id, trader = principals.create(conn, "trader", ("read", "alerts"), 0)
    denied = client.post("/v1/alerts", json=RULE, headers={"X-API-Key": reader})
    assert denied.status_code == 403 and "alerts" in denied.json()["detail"]
    made = client.post("/v1/alerts", json=RULE, headers={"X-API-Key": trader})
    assert made.status_code == 201
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert store.active_rules(conn, ids=[made.json()["id"]])[0].owner == trader_id
    assert reader_id != trader_id
