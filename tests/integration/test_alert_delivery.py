"""Alert storage and delivery on real Postgres, Redis and SNS: stored once, sent once, the
excess over the per-owner limit summarised in one message, a crash between insert and send
healed by the next delivery."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import redis

from core import alerts
from core.alert_delivery import Delivery
from core.alerts import AlertEvent, Rule
from core.stores import alerts as store
from core.stores.postgres import migrate
from core.stores.redis import connect
from dataflows.connectors.alert_sink import AlertSink
from tests.aws_support import receive, topic_with_queue

pytestmark = pytest.mark.integration
T0 = 1_733_000_000_000


@pytest.fixture()
def conn(pg_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(pg_url, autocommit=True) as c:
        migrate(c)
        yield c


@pytest.fixture()
def client(redis_server_url: str) -> Iterator[redis.Redis]:
    c = connect(redis_server_url)
    yield c
    c.close()


def make_rule(conn: psycopg.Connection[Any], owner: str = "env_a") -> Rule:
    row = store.create_rule(
        conn,
        store.NewRule(
            owner=owner, symbol="AAA", timeframe="1m", kind="price_cross",
            params=alerts.check_params("price_cross", {"level": 100}),
        ),
    )  # fmt: skip
    return store.to_rule(row)


def events(rule: Rule, n: int) -> list[AlertEvent]:
    return [alerts.fire(rule, f"trade:{T0 + i}:1:{i}", T0 + i, 100.0 + i) for i in range(n)]


class Listener:
    def __init__(self, client: redis.Redis, channel: str) -> None:
        self.pubsub = client.pubsub()  # type: ignore[no-untyped-call]
        self.pubsub.subscribe(channel)
        self.pubsub.get_message(timeout=1)  # the subscribe confirmation

    def drain(self, wait: float = 0.3) -> list[dict[str, Any]]:
        out, end = [], time.monotonic() + wait
        while time.monotonic() < end:
            msg = self.pubsub.get_message(ignore_subscribe_messages=True, timeout=0.05)
            if msg is not None:
                out.append(json.loads(msg["data"]))
        return out


def test_stored_once_sent_once_and_the_excess_summarised(
    conn: psycopg.Connection[Any], client: redis.Redis, redis_prefix: str, aws_endpoint: str
) -> None:
    rule = make_rule(conn)
    with topic_with_queue(aws_endpoint) as (topic, queue):
        d = Delivery(client, redis_prefix, max_per_minute=3, sns_topic_arn=topic,
                     endpoint_url=aws_endpoint)  # fmt: skip
        ear = Listener(client, d.channel)
        batch = events(rule, 5)
        assert d.deliver(conn, batch) == [e.id for e in batch]
        assert d.deliver(conn, batch) == []  # a replay: stored and delivered already
        got = ear.drain()
        assert [m["type"] for m in got] == ["alert"] * 3
        assert [m["data"]["id"] for m in got] == [e.id for e in batch[:3]]
        assert got[0]["owner"] == "env_a" and got[0]["data"]["message"].startswith("AAA trade")
        # after the minute: one summary holding the two held back
        assert d.summarise(now_ms=int(time.time() * 1000) + 61_000) == 1
        (summary,) = ear.drain()
        assert summary["type"] == "alert_summary" and summary["owner"] == "env_a"
        assert summary["data"]["suppressed"] == 2
        assert [e["id"] for e in summary["data"]["events"]] == [e.id for e in batch[3:]]
        assert d.summarise(now_ms=int(time.time() * 1000) + 61_000) == 0
        sns = receive(aws_endpoint, queue)
    assert len(sns) == 4  # three alerts and the summary
    rows = conn.execute("SELECT count(*), count(delivered_at) FROM alert_events").fetchone()
    assert rows == (5, 5)


def test_a_crash_between_insert_and_send_is_delivered_once_later(
    conn: psycopg.Connection[Any], client: redis.Redis, redis_prefix: str
) -> None:
    rule = make_rule(conn)
    d = Delivery(client, redis_prefix)
    ear = Listener(client, d.channel)
    batch = events(rule, 2)
    store.insert_events(conn, batch)  # the process died right after the insert
    d.send(batch[:1])  # ... or even after sending the first, before recording it
    assert [m["data"]["id"] for m in ear.drain()] == [batch[0].id]
    assert d.deliver_pending(conn) == 2
    assert [m["data"]["id"] for m in ear.drain()] == [batch[1].id]
    assert d.deliver(conn, batch) == [] and d.deliver_pending(conn) == 0


def test_rules_per_owner(conn: psycopg.Connection[Any]) -> None:
    a, b = make_rule(conn, "env_a"), make_rule(conn, "env_b")
    assert [r["id"] for r in store.owner_rules(conn, "env_a")] == [a.id]
    assert not store.deactivate(conn, "env_a", b.id)  # not a's rule
    before = store.rules_version(conn)
    assert store.deactivate(conn, "env_b", b.id)
    assert store.rules_version(conn) != before
    assert [r.id for r in store.active_rules(conn)] == [a.id]
    assert store.active_rules(conn, ids=[b.id]) == []


def test_the_sink_returns_once_stored_and_sends_off_the_worker(
    conn: psycopg.Connection[Any],
    client: redis.Redis,
    pg_url: str,
    redis_server_url: str,
    redis_prefix: str,
) -> None:
    """A batch returns once its events are in Postgres (recovery may then commit its epoch);
    they are published on the sink's own thread, each once, all of them by close."""
    listener = Listener(client, redis_prefix + "alerts")
    rule = make_rule(conn)
    sink = AlertSink(pg_url, redis_server_url, redis_prefix, max_per_minute=100)
    part = sink.build("alerts", 0, 1)
    batch = events(rule, 6)
    for k in range(3):
        part.write_batch([batch[2 * k : 2 * k + 2], batch[2 * k : 2 * k + 1]])  # one repeated
        ids = conn.execute("SELECT id FROM alert_events").fetchall()
        assert len(ids) == 2 * k + 2  # stored before the batch returned
    part.close()
    sent = [m["data"]["id"] for m in listener.drain() if m.get("type") == "alert"]
    assert sorted(sent) == sorted(e.id for e in batch)
    assert store.pending(conn) == []  # every one recorded as delivered


def test_a_server_that_lost_the_script_still_gets_each_alert_once(
    conn: psycopg.Connection[Any], client: redis.Redis, redis_prefix: str
) -> None:
    """The send script runs by SHA: a new or flushed server loads it, and nothing goes twice."""
    rule = make_rule(conn)
    d = Delivery(client, redis_prefix)
    ear = Listener(client, d.channel)
    batch = events(rule, 3)
    client.script_flush()
    assert d.send(batch[:2], summarise=False) == {"sent": 2, "held": 0, "seen": 0}
    client.script_flush()
    assert d.send(batch, summarise=False) == {"sent": 1, "held": 0, "seen": 2}
    assert [m["data"]["id"] for m in ear.drain()] == [e.id for e in batch]
