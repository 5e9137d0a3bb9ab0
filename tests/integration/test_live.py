"""The live flow against real services: the Polygon simulator's WebSocket, Redis, the lake, and
Kinesis on the AWS endpoint (LocalStack or moto). Nothing is mocked.

The simulator's minute bars are exact aggregates of the trades it streams, so the bars the flow
writes are compared with the market's own, field by field, for every minute the run saw whole.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
import pytest
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, run_main
from pydantic import SecretStr

from batch.engine.minutes import merge
from core.aws import client
from core.lake import Lake
from core.stores.redis import LiveStore, connect
from dataflows.connectors.kinesis import KinesisSink, KinesisSource
from dataflows.connectors.minute_sink import MinuteBarSink
from dataflows.connectors.quarantine_sink import QuarantineSink
from dataflows.connectors.redis_sink import RedisLiveSink
from dataflows.connectors.websocket import (
    Backoff,
    PolygonChunkSource,
    PolygonWebSocketSource,
    WsConfig,
    ws_url,
)
from dataflows.ingest import build_ingest_flow
from dataflows.live import build_live_flow
from dataflows.simulator import Market
from dataflows.simulator.server import SimulatorServer
from dataflows.trades import Reject

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DAY = dt.date(2025, 1, 3)
SPEED = 60.0  # one market minute per second


@pytest.fixture(scope="module")
def market() -> Market:
    return Market(seed=11, n_symbols=8, start=dt.date(2025, 1, 2), end=dt.date(2025, 1, 10))


@pytest.fixture()
def sim(market: Market) -> Iterator[SimulatorServer]:
    with SimulatorServer(market, speed=SPEED, replay_day=DAY, ws_interval=0.05) as s:
        yield s


def ws_cfg(sim: SimulatorServer, key: str | None = None) -> WsConfig:
    return WsConfig(ws_url(sim.ws_feed), SecretStr(key or f"key-{uuid.uuid4().hex[:8]}"))


def ws_source(
    sim: SimulatorServer, stop: threading.Event, key: str | None = None
) -> PolygonChunkSource:
    return PolygonChunkSource(ws_cfg(sim, key), stop=stop, backoff=Backoff(base=0.05, cap=0.2))


def raw_ws_source(sim: SimulatorServer, stop: threading.Event) -> PolygonWebSocketSource:
    return PolygonWebSocketSource(ws_cfg(sim), stop=stop, backoff=Backoff(base=0.05, cap=0.2))


def run_for(flow: Dataflow, stop: threading.Event | None, seconds: float) -> None:
    """Run ``flow`` in a thread; set ``stop`` after ``seconds`` (None: the flow ends itself)."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            run_main(flow)  # type: ignore[no-untyped-call]
        except BaseException as exc:
            errors.append(exc)

    th = threading.Thread(target=target, daemon=True)
    th.start()
    th.join(seconds)
    if stop is not None:
        stop.set()
    th.join(60)
    assert not th.is_alive(), "the flow did not stop"
    if errors:
        raise errors[0]


def lake_bars(lake: Lake) -> pa.Table:
    keys = [e.key for e in lake.list("bronze/raw_ohlcv_1m", suffix=".parquet")]
    assert keys, "no minute bars were written"
    return pa.concat_tables([lake.read_table(k) for k in keys])  # no hive inference


def assert_bars_match_market(table: pa.Table, market: Market) -> int:
    """Every interior minute (the first and last seen may be partial) equals the market's bar."""
    checked = 0
    table = merge(table)
    for symbol in set(table["symbol"].to_pylist()):
        rows = sorted(
            (r for r in table.to_pylist() if r["symbol"] == symbol and not r["partial"]),
            key=lambda r: r["start"],
        )
        ref = market.intraday.minute_bars(symbol, DAY, DAY)
        by_t = {int(t): i for i, t in enumerate(ref.t.tolist())}
        for r in rows[1:-1]:
            i = by_t[int(r["start"].timestamp() * 1000)]
            assert (r["open"], r["high"], r["low"], r["close"]) == (
                ref.open[i], ref.high[i], ref.low[i], ref.close[i],
            ), (symbol, r["start"])  # fmt: skip
            assert r["volume"] == ref.volume[i]
            assert r["trades"] == ref.transactions[i]
            assert r["vwap"] == pytest.approx(ref.vwap[i], abs=5e-5)
            assert (r["date"], r["source"]) == (DAY, "live")
            checked += 1
    return checked


def test_websocket_to_redis_and_lake(
    sim: SimulatorServer, market: Market, local_lake: Lake, redis_server_url: str, redis_prefix: str
) -> None:
    store = LiveStore(connect(redis_server_url), redis_prefix)
    pubsub = store.r.pubsub()  # type: ignore[no-untyped-call]
    pubsub.psubscribe(store.bar_channel("*"))
    stop = threading.Event()
    flow = build_live_flow(
        ws_source(sim, stop),
        bars=MinuteBarSink(local_lake),
        live=RedisLiveSink(redis_server_url, redis_prefix),
        quarantine=QuarantineSink(local_lake),
    )
    run_for(flow, stop, 8.0)  # eight market minutes at 60x; fewer on a loaded machine

    table = lake_bars(local_lake)
    n = assert_bars_match_market(table, market)
    assert n >= 8  # at least one whole minute of every symbol, each equal to the market's
    assert local_lake.list("quarantine") == []
    for symbol in set(table["symbol"].to_pylist()):
        last = max(
            (r for r in table.to_pylist() if r["symbol"] == symbol), key=lambda r: r["start"]
        )
        latest, bar, final = store.get_live(symbol)
        assert latest is not None and bar is not None and final is not None
        assert final["start"] == last["start"].isoformat() and final["close"] == last["close"]
        assert final["final"] is True and final["revision"] == last["revision"]
    published = []
    while (msg := pubsub.get_message(timeout=0.5)) is not None:
        if msg["type"] == "pmessage":
            published.append(json.loads(msg["data"]))
            assert msg["channel"] == store.bar_channel(published[-1]["symbol"])
    assert {"symbol", "open", "close", "start", "final", "revision"} <= set(published[-1])
    assert {m["final"] for m in published} == {True, False}  # forming updates and closes
    pubsub.close()


def test_websocket_reconnects_after_disconnect(
    sim: SimulatorServer, local_lake: Lake, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    key = f"sekret-{uuid.uuid4().hex}"
    sim.set_faults(ws_disconnect_after=10)
    stop = threading.Event()
    updates: list[Any] = []
    rejected: list[Reject] = []
    flow = build_live_flow(
        ws_source(sim, stop, key),
        bars=MinuteBarSink(local_lake),
        live=TestingSink(updates),
        quarantine=TestingSink(rejected),
    )
    run_for(flow, stop, 4.0)
    ws = sim.stats()["ws"]
    assert ws["disconnects"] >= 2 and ws["connections"] >= 3
    assert ws["messages"] > 10 * 2  # data kept flowing after each reconnect
    assert len(updates) > 0 and rejected == []
    assert "reconnecting" in caplog.text and key not in caplog.text


def test_ingest_to_kinesis_then_live_from_kinesis(
    sim: SimulatorServer,
    market: Market,
    local_lake: Lake,
    aws_endpoint: str,
    redis_server_url: str,
    redis_prefix: str,
) -> None:
    kinesis = client("kinesis", endpoint_url=aws_endpoint)
    stream = f"ticks-{uuid.uuid4().hex[:10]}"
    kinesis.create_stream(StreamName=stream, ShardCount=2)
    kinesis.get_waiter("stream_exists").wait(
        StreamName=stream, WaiterConfig={"Delay": 0.2, "MaxAttempts": 100}
    )
    try:
        stop = threading.Event()
        sink = KinesisSink(stream, endpoint_url=aws_endpoint)
        run_for(build_ingest_flow(raw_ws_source(sim, stop), sink), stop, 4.0)
        source = KinesisSource(
            stream, endpoint_url=aws_endpoint, start="TRIM_HORIZON", stop_at_end=True
        )
        assert len(source.list_parts()) == 2
        flow = build_live_flow(
            source,
            bars=MinuteBarSink(local_lake),
            live=RedisLiveSink(redis_server_url, redis_prefix),
            quarantine=QuarantineSink(local_lake),
        )
        run_for(flow, None, 60.0)
        table = lake_bars(local_lake)
        n = assert_bars_match_market(table, market)
        assert n >= 8
        store = LiveStore(connect(redis_server_url), redis_prefix)
        assert all(store.get_latest(s) is not None for s in set(table["symbol"].to_pylist()))
        assert local_lake.list("quarantine") == []
    finally:
        kinesis.delete_stream(StreamName=stream, EnforceConsumerDeletion=True)


def test_kinesis_partition_resumes_after_its_checkpoint(aws_endpoint: str) -> None:
    kinesis = client("kinesis", endpoint_url=aws_endpoint)
    stream = f"ticks-{uuid.uuid4().hex[:10]}"
    kinesis.create_stream(StreamName=stream, ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(
        StreamName=stream, WaiterConfig={"Delay": 0.2, "MaxAttempts": 100}
    )
    try:
        put = KinesisSink(stream, endpoint_url=aws_endpoint).build("k", 0, 1)
        put.write_batch([("AAPL", b"1"), ("AAPL", b"2")])
        source = KinesisSource(stream, endpoint_url=aws_endpoint, start="TRIM_HORIZON")
        (shard,) = source.list_parts()
        first = source.build_part("in", shard, None)
        assert drain(first) == [b"1", b"2"]
        checkpoint = first.snapshot()
        put.write_batch([("AAPL", b"3")])
        resumed = source.build_part("in", shard, checkpoint)
        assert drain(resumed) == [b"3"]
        assert resumed.snapshot() != checkpoint
    finally:
        kinesis.delete_stream(StreamName=stream, EnforceConsumerDeletion=True)


class _Crash(StatelessSinkPartition[Any]):
    def __init__(self, inner: StatelessSinkPartition[Any], after: int) -> None:
        self.inner, self.left = inner, after

    def write_batch(self, items: list[Any]) -> None:
        self.left -= 1
        if self.left < 0:
            raise RuntimeError("simulated crash")
        self.inner.write_batch(items)


class CrashingSink(DynamicSink[Any]):
    """Passes ``after`` batches to ``inner``, then fails like a killed process."""

    def __init__(self, inner: DynamicSink[Any], after: int) -> None:
        self.inner, self.after = inner, after

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Crash:
        return _Crash(self.inner.build(step_id, worker_index, worker_count), self.after)


def synthetic_records(minutes: int = 6) -> list[tuple[str, bytes]]:
    t0 = int(dt.datetime(2025, 1, 3, 14, 30, tzinfo=dt.UTC).timestamp() * 1000)
    recs = []
    for i in range(minutes * 40):
        for k, sym in enumerate(("AAPL", "MSFT", "NVDA")):
            ev = {"ev": "T", "sym": sym, "p": 100 + k + (i * 7 % 13) / 10, "s": 1 + i % 9}
            recs.append((sym, json.dumps([{**ev, "t": t0 + i * 1500}]).encode()))
    return recs


def test_recovery_after_a_crash_rewrites_the_same_bars(
    aws_endpoint: str, tmp_path: Any, local_lake: Lake
) -> None:
    kinesis = client("kinesis", endpoint_url=aws_endpoint)
    stream = f"ticks-{uuid.uuid4().hex[:10]}"
    kinesis.create_stream(StreamName=stream, ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(
        StreamName=stream, WaiterConfig={"Delay": 0.2, "MaxAttempts": 100}
    )
    try:
        records = synthetic_records()
        KinesisSink(stream, endpoint_url=aws_endpoint).build("k", 0, 1).write_batch(records)

        def flow(lake: Lake, live: DynamicSink[Any]) -> Dataflow:
            source = KinesisSource(
                stream, endpoint_url=aws_endpoint, start="TRIM_HORIZON", stop_at_end=True,
                limit=60, poll=dt.timedelta(milliseconds=100),
            )  # fmt: skip
            return build_live_flow(
                source, bars=MinuteBarSink(lake, flush_after=0), live=live,
                quarantine=QuarantineSink(lake),
            )  # fmt: skip

        clean = Lake((tmp_path / "clean").as_uri())
        run_main(flow(clean, TestingSink([])))  # type: ignore[no-untyped-call]

        recovery = tmp_path / "recovery"
        recovery.mkdir()
        init_db_dir(recovery, 1)  # type: ignore[no-untyped-call]
        config = RecoveryConfig(str(recovery))  # type: ignore[no-untyped-call]
        epoch = dt.timedelta(milliseconds=50)
        crashing = CrashingSink(TestingSink([]), after=12)
        with pytest.raises(Exception) as crash:  # bytewax wraps the sink's error
            run_main(flow(local_lake, crashing), epoch_interval=epoch, recovery_config=config)  # type: ignore[no-untyped-call]  # fmt: skip
        causes: list[BaseException] = [crash.value]
        while causes[-1].__cause__ is not None:
            causes.append(causes[-1].__cause__)
        assert any("simulated crash" in str(c) for c in causes)
        resumed: list[Any] = []
        run_main(flow(local_lake, TestingSink(resumed)), epoch_interval=epoch, recovery_config=config)  # type: ignore[no-untyped-call]  # fmt: skip

        trades = sum(o.counters["trades"] - o.counters["duplicates"] for o in resumed[-1:])
        assert trades > 0  # the rerun resumed from a snapshot with the fold's counters
        got, want = merge(lake_bars(local_lake)), merge(lake_bars(clean))
        assert got.equals(want)  # byte-equal rows, ingested_at included
        assert want.num_rows == 3 * 6 and local_lake.list("quarantine") == []
    finally:
        kinesis.delete_stream(StreamName=stream, EnforceConsumerDeletion=True)


def drain(part: Any, tries: int = 20) -> list[bytes]:
    """Read a shard partition until a read comes back empty after data (its chunks' frames)."""
    got: list[bytes] = []
    for _ in range(tries):
        frames = [f for chunk in part.next_batch() for f in chunk.frames]
        if not frames and got:
            break
        got.extend(frames)
        time.sleep(0.05)
    return got


def run_until(args: list[str], env: dict[str, str], done: Callable[[], bool]) -> str:
    """Run ``python -m ARGS`` until ``done()`` (30 s at most), then interrupt it; its output."""
    proc = subprocess.Popen(
        [sys.executable, "-m", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None and not done():
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out = proc.communicate(timeout=15)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            out = proc.communicate()[0]
    return out.decode(errors="replace")[-3000:]


def service_env(lake: Lake, redis_url: str, prefix: str, **extra: str) -> dict[str, str]:
    env = {**os.environ, "LAKE_URL": lake.url, "REDIS_URL": redis_url, "REDIS_PREFIX": prefix}
    for name in ("KINESIS_STREAM", "POLYGON_API_KEY", "POLYGON_SECRET_ID", "LIVE_SYMBOLS"):
        env.pop(name, None)
    return {**env, **extra}


def test_bytewax_run_entry_point(
    sim: SimulatorServer, tmp_path: Any, redis_server_url: str, redis_prefix: str, pg_url: str
) -> None:
    """``python -m bytewax.run dataflows.live:flow`` on the WebSocket, configured by env."""
    lake = Lake((tmp_path / "lake").as_uri())
    env = service_env(
        lake, redis_server_url, redis_prefix, POLYGON_WS_URL=sim.ws_feed, LIVE_SYMBOLS="AAPL,MSFT",
        DATABASE_URL=pg_url, POLYGON_REST_URL=sim.rest_url,
    )  # fmt: skip
    store = LiveStore(connect(redis_server_url), redis_prefix)
    out = run_until(
        ["bytewax.run", "dataflows.live:flow"],
        env,
        lambda: bool(store.get_bar("MSFT") and lake.list("bronze/raw_ohlcv_1m")),
    )
    assert store.get_latest("AAPL") is not None, out
    assert store.get_bar("MSFT") is not None
    assert store.get_latest("NVDA") is None  # not subscribed
    assert lake.list("bronze/raw_ohlcv_1m"), out


def test_ingest_cli_then_live_entry_point_on_kinesis(
    sim: SimulatorServer,
    tmp_path: Any,
    aws_endpoint: str,
    redis_server_url: str,
    redis_prefix: str,
    pg_url: str,
) -> None:
    """``python -m dataflows.ingest`` fills the stream; ``dataflows.live:flow`` reads its shards."""
    kinesis = client("kinesis", endpoint_url=aws_endpoint)
    stream = f"ticks-{uuid.uuid4().hex[:10]}"
    kinesis.create_stream(StreamName=stream, ShardCount=2)
    kinesis.get_waiter("stream_exists").wait(
        StreamName=stream, WaiterConfig={"Delay": 0.2, "MaxAttempts": 100}
    )
    try:
        lake = Lake((tmp_path / "lake").as_uri())
        env = service_env(
            lake, redis_server_url, redis_prefix, POLYGON_WS_URL=sim.ws_feed,
            AWS_ENDPOINT_URL=aws_endpoint, DATABASE_URL=pg_url,
        )  # fmt: skip
        ingest = subprocess.run(
            [sys.executable, "-m", "dataflows.ingest", "--stream", stream, "--duration", "3",
             "--symbols", "AAPL,MSFT"],
            env=env, capture_output=True, timeout=60, check=False,
        )  # fmt: skip
        assert ingest.returncode == 0, ingest.stderr.decode()[-2000:]
        store = LiveStore(connect(redis_server_url), redis_prefix)
        env.update(KINESIS_STREAM=stream, KINESIS_START="TRIM_HORIZON")
        out = run_until(
            ["bytewax.run", "dataflows.live:flow"],
            env,
            lambda: bool(store.get_bar("MSFT") and lake.list("bronze/raw_ohlcv_1m")),
        )
        assert store.get_latest("AAPL") is not None and store.get_bar("MSFT") is not None, out
        assert store.get_latest("NVDA") is None  # the ingest subscribed to two symbols
        assert lake.list("bronze/raw_ohlcv_1m"), out
    finally:
        kinesis.delete_stream(StreamName=stream, EnforceConsumerDeletion=True)
