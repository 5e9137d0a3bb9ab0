"""No alert twice, none missed, across a crash of the live flow on Kinesis with recovery.

The flow dies mid-crossing: right after the alert sink stored the event of a crossing trade and
before it was delivered (the worst instant: a kill there loses nothing only if the event is
found pending, and sends nothing twice only if the replayed crossing keeps its id). The rerun
resumes from the last snapshot; the events stored and published over both runs are exactly
those of an uninterrupted run, each published once."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, run_main

from core import alerts
from core.alerts import AlertEvent
from core.aws import client
from core.stores import alerts as store
from core.stores.postgres import migrate
from core.stores.redis import connect
from dataflows.alerts import FeedConfig, feed_factory, stop_all
from dataflows.connectors.alert_sink import AlertSink
from dataflows.connectors.kinesis import KinesisSink, KinesisSource
from dataflows.live import build_live_flow

pytestmark = pytest.mark.integration
T0 = int(dt.datetime(2025, 1, 3, 14, 30, tzinfo=dt.UTC).timestamp() * 1000)
CREATED = dt.datetime(2025, 1, 3, 14, 0, tzinfo=dt.UTC)
CRASH_AT = 5
"""The flow dies right after storing the 5th crossing event of FLP."""


def records() -> list[tuple[str, bytes]]:
    """Six minutes: FLP flaps around 50 every 6 s, PCT moves 2% every few minutes."""
    out = []
    for i in range(240):
        t = T0 + i * 1500
        flp = 50.4 if i % 8 in (2, 3, 4) else 49.6
        pct = 100.0 * (1.03 if (i // 40) % 2 else 1.0)
        evs = [
            {"ev": "T", "sym": "FLP", "p": flp, "s": 100, "t": t, "i": str(i), "x": 1},
            {"ev": "T", "sym": "PCT", "p": pct, "s": 100, "t": t, "i": str(i), "x": 1},
        ]
        out.append(("FLP", json.dumps(evs).encode()))
    return out


class _Die(StatelessSinkPartition[list[AlertEvent]]):
    def __init__(self, inner: StatelessSinkPartition[list[AlertEvent]], url: str) -> None:
        self.inner, self.url, self.seen = inner, url, 0

    def write_batch(self, items: list[list[AlertEvent]]) -> None:
        events = [e for batch in items for e in batch]
        flp = [e for e in events if e.symbol == "FLP"]
        if self.seen < CRASH_AT <= self.seen + len(flp):
            with psycopg.connect(self.url, autocommit=True) as conn:
                store.insert_events(conn, events)  # stored, never delivered
            msg = "killed between the insert and the delivery"
            raise RuntimeError(msg)
        self.seen += len(flp)
        self.inner.write_batch(items)


class DyingSink(DynamicSink[list[AlertEvent]]):
    def __init__(self, inner: AlertSink) -> None:
        self.inner = inner

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Die:
        return _Die(self.inner.build(step_id, worker_index, worker_count), self.inner.database_url)


@pytest.fixture()
def stream(aws_endpoint: str) -> Iterator[str]:
    kinesis = client("kinesis", endpoint_url=aws_endpoint)
    name = f"ticks-{uuid.uuid4().hex[:10]}"
    kinesis.create_stream(StreamName=name, ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(
        StreamName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 100}
    )
    KinesisSink(name, endpoint_url=aws_endpoint).build("k", 0, 1).write_batch(records())
    yield name
    kinesis.delete_stream(StreamName=name, EnforceConsumerDeletion=True)


def test_a_crash_mid_crossing_delivers_every_event_once(
    stream: str, aws_endpoint: str, pg_url: str, redis_server_url: str, tmp_path: Any
) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        migrate(conn)
        for sym, kind, params in (
            ("FLP", "price_cross", {"level": 50}),
            ("PCT", "percent_move", {"percent": 2, "bars": 1, "direction": "any"}),
        ):
            row = store.create_rule(conn, store.NewRule(
                owner="env_o", symbol=sym, timeframe="1m", kind=kind,
                params=alerts.check_params(kind, params),
            ))  # fmt: skip
            conn.execute(
                "UPDATE alert_rules SET created_at = %s WHERE id = %s", (CREATED, row["id"])
            )

    def flow(prefix: str, sink: DynamicSink[list[AlertEvent]]) -> Dataflow:
        source = KinesisSource(
            stream, endpoint_url=aws_endpoint, start="TRIM_HORIZON", stop_at_end=True,
            limit=20, poll=dt.timedelta(milliseconds=50),
        )  # fmt: skip
        return build_live_flow(
            source, bars=TestingSink([]), live=TestingSink([]), quarantine=TestingSink([]),
            alerts=sink, alert_feed=feed_factory(FeedConfig(pg_url, redis_server_url, prefix), None),
        )  # fmt: skip

    def stored() -> list[str]:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            return sorted(r[0] for r in conn.execute("SELECT id FROM alert_events").fetchall())

    r = connect(redis_server_url)
    clean_prefix, prefix = f"c{uuid.uuid4().hex[:8]}:", f"k{uuid.uuid4().hex[:8]}:"
    run_main(flow(clean_prefix, AlertSink(pg_url, redis_server_url, clean_prefix)))  # type: ignore[no-untyped-call]
    want = stored()
    assert len([1 for _ in want]) > CRASH_AT + 2
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DELETE FROM alert_events")

    listener = r.pubsub()  # type: ignore[no-untyped-call]
    listener.subscribe(prefix + "alerts")
    listener.get_message(timeout=1)
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    init_db_dir(recovery, 1)  # type: ignore[no-untyped-call]
    config = RecoveryConfig(str(recovery))  # type: ignore[no-untyped-call]
    epoch = dt.timedelta(milliseconds=50)
    dying = DyingSink(AlertSink(pg_url, redis_server_url, prefix))
    with pytest.raises(Exception) as crash:  # bytewax wraps the sink's error
        run_main(flow(prefix, dying), epoch_interval=epoch, recovery_config=config)  # type: ignore[no-untyped-call]  # fmt: skip
    causes: list[BaseException] = [crash.value]
    while causes[-1].__cause__ is not None:
        causes.append(causes[-1].__cause__)
    assert any("killed between" in str(c) for c in causes)
    stop_all()  # the dead run's rule feed (a killed process takes it along)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        undelivered = conn.execute(
            "SELECT count(*) FROM alert_events WHERE delivered_at IS NULL"
        ).fetchone()
    assert undelivered is not None and undelivered[0] >= 1  # died holding a stored crossing
    run_main(flow(prefix, AlertSink(pg_url, redis_server_url, prefix)), epoch_interval=epoch, recovery_config=config)  # type: ignore[no-untyped-call]  # fmt: skip

    published = []
    while (msg := listener.get_message(ignore_subscribe_messages=True, timeout=0.5)) is not None:
        published.append(json.loads(msg["data"])["data"]["id"])
    assert stored() == want  # none missed, none extra
    assert sorted(published) == want  # each published exactly once over both runs
    with psycopg.connect(pg_url, autocommit=True) as conn:
        left = conn.execute("SELECT count(*) FROM alert_events WHERE delivered_at IS NULL")
        assert left.fetchone() == (0,)
    listener.close()
    r.close()
