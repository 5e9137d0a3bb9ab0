"""The harness's real services answer, and the stores work against them."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from core.lake import Lake
from core.schemas import BRONZE_DAILY
from core.stores import postgres
from core.stores.redis import LiveStore, connect

pytestmark = pytest.mark.integration
T0 = dt.datetime(2025, 1, 8, 22, tzinfo=dt.UTC)


def _bars(close: float, source: str, at: dt.datetime) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "symbol": "AAPL", "date": dt.date(2025, 1, 8), "open": 1.0, "high": 2.0,
                "low": 0.5, "close": close, "volume": 10.0, "vwap": 1.23456789,
                "transactions": 3, "source": source, "ingested_at": at,
            }
        ],
        schema=BRONZE_DAILY,
    )  # fmt: skip


def test_postgres_upsert_rules(pg_url: str) -> None:
    with postgres.connect(pg_url) as conn:
        postgres.migrate(conn)
        postgres.migrate(conn)
        assert postgres.upsert_daily(conn, _bars(1.5, "rest", T0)) == 1
        # live never replaces rest, even when newer
        postgres.upsert_daily(conn, _bars(1.9, "live", T0 + dt.timedelta(hours=1)))
        # an older rest row does not replace a newer one
        postgres.upsert_daily(conn, _bars(1.1, "rest", T0 - dt.timedelta(hours=1)))
        row = conn.execute("SELECT close, vwap, source FROM raw_ohlcv").fetchone()
        assert row == (1.5, 1.23456789, "rest")
        postgres.upsert_daily(conn, _bars(1.7, "rest", T0 + dt.timedelta(hours=2)))
        assert conn.execute("SELECT close FROM raw_ohlcv").fetchone() == (1.7,)


def test_redis_live_store(redis_server_url: str, redis_prefix: str) -> None:
    store = LiveStore(connect(redis_server_url), redis_prefix)
    store.set_latest("AAPL", {"price": 1.5, "size": 10})
    store.set_bar("AAPL", {"open": 1.0, "close": 1.5})
    assert store.get_latest("AAPL") == {"price": 1.5, "size": 10}
    assert store.get_bar("AAPL") == {"symbol": "AAPL", "open": 1.0, "close": 1.5}
    assert store.get_latest("MSFT") is None


def test_s3_lake_same_code_path(s3_lake: Lake) -> None:
    t = pa.table({"x": [1, 2]})
    s3_lake.write_table("bronze/x.parquet", t)
    assert s3_lake.read_table("bronze/x.parquet").equals(t)
    assert [e.key for e in s3_lake.list("bronze")] == ["bronze/x.parquet"]
    s3_lake.delete("bronze/x.parquet")
    assert s3_lake.list("bronze") == []


def test_postgres_binary_copy_round_trip(pg_url: str) -> None:
    """Every value, NULL, odd string and odd float reaches raw_ohlcv bit-exact."""
    at = [T0, dt.datetime(1999, 12, 31, 23, 59, 59, 999_999, tzinfo=dt.UTC)]
    rows = [
        {
            "symbol": sym, "date": dt.date(1970, 1, 1) + dt.timedelta(days=9_000 + i),
            "open": 0.1 + i, "high": 1e300, "low": 5e-324, "close": -0.0 if i % 2 else 1 / 3,
            "volume": float(i), "vwap": None if i % 3 == 0 else 12.345678901234567,
            "transactions": None if i % 4 == 1 else 2**62 + i, "source": src,
            "ingested_at": at[i % 2],
        }
        for i, (sym, src) in enumerate(
            [("A", "rest"), ("BRK.B", "live"), ("ÄÖÜ€", "rest"), ("X" * 40, "flatfile"),
             ("A.B-C", "rest"), ("Z", "export"), ("QQQQ", "rest")]
        )
    ]  # fmt: skip
    table = pa.Table.from_pylist(rows, schema=BRONZE_DAILY)
    sliced = pa.concat_tables([table.slice(0, 3), table.slice(3)])  # chunked and offset arrays
    with postgres.connect(pg_url) as conn:
        postgres.migrate(conn)
        assert postgres.upsert_daily(conn, sliced) == len(rows)
        # the same keys again take the conflict-aware path, with the same bytes
        assert postgres.upsert_daily(conn, sliced.slice(2)) == len(rows) - 2
        got = conn.execute(
            "SELECT symbol, date, open, high, low, close, volume, vwap, transactions, source,"
            " ingested_at FROM raw_ohlcv ORDER BY date"
        ).fetchall()
    want = [tuple(r.values()) for r in rows]
    assert [tuple(g) for g in got] == want
    assert all(str(g[5]) == str(w[5]) for g, w in zip(got, want, strict=True))  # -0.0 kept


def test_redis_live_writes_survive_a_script_flush_and_a_lost_connection(
    redis_server_url: str, redis_prefix: str
) -> None:
    """The hand-framed write needs no script on the server (one flushed changes nothing) and
    reconnects when its connection is closed under it."""
    client = connect(redis_server_url)
    store = LiveStore(client, redis_prefix)
    sub = connect(redis_server_url).pubsub()  # type: ignore[no-untyped-call]
    sub.subscribe(store.bar_channel("AAPL"))
    assert sub.get_message(timeout=1) is not None  # the subscription's confirmation
    for attempt in range(3):
        if attempt == 1:
            client.script_flush()
        if attempt == 2:  # the store's connection is closed under it
            admin = connect(redis_server_url)
            killed = client.client_id()
            admin.client_kill_filter(_id=str(killed))
            admin.close()
        doc = b'{"symbol":"AAPL","close":%d}' % attempt
        store.write_encoded(
            docs=[(store.key("bar", "AAPL"), doc)],
            events=[("AAPL", doc)],
            metrics={"p0": {"trades": attempt}},
            ttl_s=60,
        )
        assert client.get(store.key("bar", "AAPL")) == doc.decode()
        assert 0 < client.ttl(store.key("bar", "AAPL")) <= 60
        assert store.live_metrics()["p0"]["trades"] == str(attempt)
        if attempt < 2:
            message = sub.get_message(timeout=1)
            assert message is not None and message["data"] == doc.decode()
    assert client.client_id() != killed  # the write reconnected
    sub.close()
    client.close()


def test_redis_live_writes_keep_every_document_and_the_order_and_the_connection_usable(
    redis_server_url: str, redis_prefix: str
) -> None:
    """A publication (replies off while it is sent) stores every document before it publishes
    any event, publishes the events in order, and leaves its connection answering."""
    client = connect(redis_server_url)
    store = LiveStore(client, redis_prefix)
    sub = connect(redis_server_url).pubsub()  # type: ignore[no-untyped-call]
    sub.psubscribe(store.bar_channel("*"))
    assert sub.get_message(timeout=1) is not None
    docs = [(store.key("bar", f"S{k}"), b'{"k":%d}' % k) for k in range(3000)]
    events = [(f"S{k % 4}", b'{"e":%d}' % k) for k in range(800)]
    store.write_encoded(docs=docs, events=events, metrics={"p0": {"n": 1}}, ttl_s=60)
    assert client.mget([k for k, _ in docs]) == [d.decode() for _, d in docs]
    got = [sub.get_message(timeout=1) for _ in events]
    assert [(m["channel"], m["data"]) for m in got if m] == [
        (store.bar_channel(s), d.decode()) for s, d in events
    ]
    assert store.live_metrics()["p0"]["n"] == "1"
    assert 0 < client.ttl(store.key("metrics:live", "p0")) <= 60
    assert client.ping() and client.get(docs[0][0]) == docs[0][1].decode()  # replies are on
    sub.close()
    client.close()
