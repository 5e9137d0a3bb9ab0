"""Live connectors' pure parts, and the lake sinks on a temporary local lake."""

from __future__ import annotations

import datetime as dt
import json
import random
from dataclasses import replace

import pytest
import redis
from pydantic import SecretStr

from core.isotime import ms_iso
from core.lake import Lake
from core.schemas import BRONZE_MINUTE, QUARANTINE
from core.settings import LiveSettings
from core.stores.redis import connect
from dataflows.connectors.kinesis import MAX_RECORDS, request_chunks
from dataflows.connectors.minute_sink import MinuteBarSink
from dataflows.connectors.quarantine_sink import QuarantineSink
from dataflows.connectors.redis_sink import RedisLiveSink
from dataflows.connectors.websocket import Backoff, WsConfig, parse_symbols, ws_config, ws_url
from dataflows.ingest import MALFORMED, UNKNOWN, frame_records
from dataflows.minute_fold import LATE_BEYOND_HORIZON, FoldOut, MinuteBar
from dataflows.trades import Reject

pytestmark = pytest.mark.unit
T0 = dt.datetime(2025, 1, 2, 14, 30, tzinfo=dt.UTC)
NOW = dt.datetime(2025, 1, 2, 16, tzinfo=dt.UTC)


T0_MS = int(T0.timestamp() * 1000)
NOW_MS = int(NOW.timestamp() * 1000)


def bar(minute: int, close: float = 10.0, sym: str = "AAPL", revision: int = 0) -> MinuteBar:
    return MinuteBar(
        symbol=sym, start=T0_MS + minute * 60_000, open=10, high=max(10, close),
        low=min(10, close), close=close, volume=100, vwap=10, trades=2, final=True,
        revision=revision, partial=False,
    )  # fmt: skip


def test_minute_sink_writes_market_wide_fragments_named_by_content(local_lake: Lake) -> None:
    part = MinuteBarSink(local_lake, flush_after=3600).build_part("lake", "minutes", None)
    part.write_batch([[bar(1), bar(0, sym="MSFT")], [bar(0), bar(1, 12, revision=1)]])
    assert local_lake.list("bronze/raw_ohlcv_1m") == []  # buffered until a flush
    part.snapshot()  # a recovery snapshot waits for the write
    (entry,) = local_lake.list("bronze/raw_ohlcv_1m")
    assert entry.key.startswith("bronze/raw_ohlcv_1m/date=2025-01-02/part-1430-1431-")
    t = local_lake.read_table(entry.key)
    assert t.schema == BRONZE_MINUTE
    assert t["symbol"].to_pylist() == ["AAPL", "AAPL", "AAPL", "MSFT"]
    assert t["revision"].to_pylist() == [0, 0, 1, 0]
    assert t["ingested_at"].to_pylist()[0] == T0 + dt.timedelta(minutes=1)
    again = MinuteBarSink(local_lake, flush_after=0).build_part("lake", "minutes", None)
    again.write_batch([[bar(0), bar(1, 12, revision=1), bar(1), bar(0, sym="MSFT")]])
    again.close()  # the same bars in another order: the same file
    assert [e.key for e in local_lake.list("bronze/raw_ohlcv_1m")] == [entry.key]


def test_quarantine_sink_writes_reasons_and_payloads(local_lake: Lake) -> None:
    items = [
        Reject({"raw": "{oops"}, "malformed JSON: x", NOW_MS),
        Reject({"ev": "T", "sym": "AAPL", "p": 1.0, "s": 1, "t": 1}, LATE_BEYOND_HORIZON, NOW_MS),
    ]
    part = QuarantineSink(local_lake).build("quarantine", 3, 4)
    part.write_batch(items)
    part.write_batch(items)  # the same batch again (a replay) lands on the same file
    (entry,) = local_lake.list("quarantine/live/2025-01-02")
    assert entry.key.startswith("quarantine/live/2025-01-02/part-w3-")
    t = local_lake.read_table(entry.key)
    assert t.schema == QUARANTINE
    assert t["reason"].to_pylist() == ["malformed JSON: x", LATE_BEYOND_HORIZON]
    assert t["symbol"].to_pylist() == [None, "AAPL"]
    assert json.loads(t["payload"][1].as_py())["p"] == 1.0
    assert t["received_at"].to_pylist()[0] == NOW


def test_frame_records_group_by_symbol_and_keep_everything() -> None:
    frame = json.dumps(
        [
            {"ev": "status", "status": "connected", "message": "hi"},
            {"ev": "T", "sym": "AAPL", "p": 1, "s": 1, "t": 1},
            {"ev": "T", "sym": "MSFT", "p": 2, "s": 1, "t": 1},
            {"ev": "T", "sym": "AAPL", "p": 3, "s": 1, "t": 2},
            {"ev": "T", "p": 3},
        ]
    )
    recs = frame_records(frame)
    assert [k for k, _ in recs] == ["AAPL", "MSFT", UNKNOWN]
    assert [e["p"] for e in json.loads(recs[0][1])] == [1, 3]
    assert frame_records("{nope") == [(MALFORMED, b"{nope")]
    big = [{"ev": "T", "sym": "AAPL", "p": 1, "s": 1, "t": 1, "pad": "x" * 1000}] * 2000
    chunks = frame_records(json.dumps(big))
    assert len(chunks) > 1 and sum(len(json.loads(d)) for _, d in chunks) == 2000


def test_request_chunks_respect_kinesis_limits() -> None:
    recs = [("K", b"x" * 20_000)] * 1200
    chunks = list(request_chunks(recs))
    assert sum(len(c) for c in chunks) == 1200
    assert all(len(c) <= MAX_RECORDS for c in chunks)
    assert all(sum(len(d) + 1 for _, d in c) <= 5 * 1024 * 1024 for c in chunks)
    with pytest.raises(ValueError, match="at most"):
        list(request_chunks([("K", b"x" * (1024 * 1024 + 1))]))


def test_websocket_config() -> None:
    assert parse_symbols("aapl, MSFT,,aapl") == ("AAPL", "MSFT")
    assert parse_symbols("*") == ("*",) and parse_symbols("") == ("*",)
    assert WsConfig("ws://x/stocks", SecretStr("k"), ("AAPL", "MSFT")).subscription == (
        "T.AAPL,T.MSFT"
    )
    assert ws_url("127.0.0.1:8010") == "ws://127.0.0.1:8010/stocks"
    assert ws_url("socket.polygon.io") == "wss://socket.polygon.io/stocks"
    assert ws_url("ws://h:1/stocks") == "ws://h:1/stocks"
    sim = ws_config(LiveSettings(polygon_api_key=None, polygon_ws_url=None, live_symbols="*"))
    assert sim.url == "ws://127.0.0.1:8010/stocks" and sim.key.get_secret_value() == "simulator"
    real = ws_config(LiveSettings(polygon_api_key=SecretStr("sekret"), polygon_ws_url=None))
    assert real.url == "wss://socket.polygon.io/stocks"
    assert "sekret" not in repr(real)
    assert all(0 <= Backoff(0.5, 4).delay(n) <= 4 for n in range(20))


def test_ingest_cli_help(capsys: pytest.CaptureFixture[str]) -> None:
    from dataflows import ingest

    with pytest.raises(SystemExit) as exc:
        ingest.main(["--help"])
    assert exc.value.code == 0
    assert "Kinesis" in capsys.readouterr().out


def test_live_module_builds_flow_only_on_access() -> None:
    import dataflows.live as live

    assert "flow" not in vars(live)  # importing read no settings and opened nothing
    with pytest.raises(AttributeError):
        _ = live.no_such_thing


def test_live_redis_writes_leave_the_worker_and_final_bars_wait_for_redis(
    redis_server_url: str, redis_prefix: str
) -> None:
    """Forming bars go out on the sink's own thread, in order; a batch with a final bar
    returns only once Redis holds it (recovery may commit its epoch then)."""
    sink = RedisLiveSink(redis_server_url, redis_prefix).build("redis", 0, 1)
    r = connect(redis_server_url)
    for k in range(30):
        forming = replace(bar(1, close=10 + k / 100), final=False)
        sink.write_batch([FoldOut("p0", 0, forming=[forming])])
    sink.write_batch([FoldOut("p0", 0, final=[bar(0, close=9.5)])])
    final = r.get(f"{redis_prefix}final:AAPL")
    forming_doc = r.get(f"{redis_prefix}bar:AAPL")
    assert final is not None and json.loads(final)["close"] == 9.5
    assert forming_doc is not None and json.loads(forming_doc)["close"] == 10.29
    sink.close()


def test_forming_bar_events_are_coalesced_per_symbol_finals_never(
    redis_server_url: str, redis_prefix: str
) -> None:
    """In one batch: each symbol's newest forming bar is published once (none a final bar of
    the batch supersedes); every final bar and revision is published, in order."""
    sink = RedisLiveSink(redis_server_url, redis_prefix).build("redis", 0, 1)
    r = connect(redis_server_url)
    channel = r.pubsub()  # type: ignore[no-untyped-call]
    channel.psubscribe(f"{redis_prefix}bars:*")
    assert channel.get_message(timeout=1)["type"] == "psubscribe"
    forming = [replace(bar(1, close=10 + k, sym=s), final=False) for k in range(3)
               for s in ("AAPL", "MSFT", "IBM")]  # fmt: skip
    sink.write_batch([
        FoldOut("p0", 0, forming=forming[:6]),
        FoldOut("p0", 0, forming=forming[6:], final=[bar(0), bar(0, sym="MSFT")]),
        FoldOut("p0", 0, final=[bar(1, sym="IBM"), bar(0, 11, revision=1)]),
    ])  # fmt: skip
    sink.close()
    got = [json.loads(m["data"]) for m in iter(lambda: channel.get_message(timeout=0.5), None)]
    assert [(d["symbol"], d["start"][11:16], d["final"], d["close"]) for d in got] == [
        ("AAPL", "14:30", True, 10.0),
        ("MSFT", "14:30", True, 10.0),
        ("IBM", "14:31", True, 10.0),
        ("AAPL", "14:30", True, 11.0),  # the revision
        ("AAPL", "14:31", False, 12.0),
        ("MSFT", "14:31", False, 12.0),  # IBM's forming 14:31 is final in the same batch
    ]
    channel.close()


def test_a_failed_live_redis_write_stops_the_flow() -> None:
    sink = RedisLiveSink("redis://127.0.0.1:9/0").build("redis", 0, 1)  # nothing listens
    with pytest.raises(redis.exceptions.ConnectionError):
        sink.write_batch([FoldOut("p0", 0, final=[bar(0)])])
    sink.close()


def test_ms_iso_is_isoformat_to_the_millisecond() -> None:
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    rng = random.Random(5)
    stamps = [0, 59_999, 60_000, T0_MS, T0_MS + 1, T0_MS + 999, -1, -86_400_001]
    stamps += [rng.randrange(-(10**12), 4 * 10**12) for _ in range(20_000)]
    for ms in stamps * 2:  # memoised the second time
        assert ms_iso(ms) == (epoch + dt.timedelta(milliseconds=ms)).isoformat(), ms
