"""Live connectors' pure parts, and the lake sinks on a temporary local lake."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from pydantic import SecretStr

from core.lake import Lake
from core.records import Bar
from core.schemas import BRONZE_MINUTE, QUARANTINE
from core.settings import LiveSettings
from dataflows.connectors.kinesis import MAX_RECORDS, request_chunks
from dataflows.connectors.minute_sink import MinuteBarSink
from dataflows.connectors.quarantine_sink import QuarantineSink
from dataflows.connectors.websocket import Backoff, WsConfig, parse_symbols, ws_config, ws_url
from dataflows.ingest import MALFORMED, UNKNOWN, frame_records
from dataflows.operators import LATE, Rejected

pytestmark = pytest.mark.unit
T0 = dt.datetime(2025, 1, 2, 14, 30, tzinfo=dt.UTC)
NOW = dt.datetime(2025, 1, 2, 16, tzinfo=dt.UTC)
PART = "bronze/raw_ohlcv_1m/symbol=AAPL/date=2025-01-02/part-20250102T1430Z.parquet"


def bar(minute: int, close: float = 10.0, sym: str = "AAPL") -> Bar:
    return Bar(
        symbol=sym, date=dt.date(2025, 1, 2), open=10, high=max(10, close), low=min(10, close),
        close=close, volume=100, vwap=10, transactions=2, source="live", ingested_at=NOW,
        start=T0 + dt.timedelta(minutes=minute), trades=2,
    )  # fmt: skip


def test_minute_sink_rewrites_parts_idempotently(local_lake: Lake) -> None:
    sink = MinuteBarSink(local_lake, concurrency=2)
    part = sink.build("lake", 0, 1)
    part.write_batch([bar(0), bar(1), bar(2, 11)])
    part.write_batch([bar(1, 12), bar(3)])  # a replay of minute 1 with a newer close, and more
    part.write_batch([bar(29), bar(30), bar(0, sym="MSFT")])  # 14:59 same part, 15:00 the next
    part.close()
    t = local_lake.read_table(PART)
    assert t.schema == BRONZE_MINUTE
    assert [s.minute for s in t["start"].to_pylist()] == [30, 31, 32, 33, 59]
    assert t["close"].to_pylist()[1] == 12
    keys = [e.key for e in local_lake.list("bronze/raw_ohlcv_1m")]
    assert keys == [
        PART,
        PART.replace("T1430Z", "T1500Z"),
        PART.replace("AAPL", "MSFT"),
    ]


def test_minute_sink_after_restart_keeps_rows_already_written(local_lake: Lake) -> None:
    first = MinuteBarSink(local_lake).build("lake", 0, 1)
    first.write_batch([bar(0), bar(1)])
    # a new process (after a crash) continues the same bucket: it must not lose minutes 0 and 1
    second = MinuteBarSink(local_lake).build("lake", 0, 1)
    second.write_batch([bar(1, 13), bar(2)])
    t = local_lake.read_table(PART)
    assert [s.minute for s in t["start"].to_pylist()] == [30, 31, 32]
    assert t["close"].to_pylist() == [10, 13, 10]


def test_minute_sink_rejects_odd_buckets(local_lake: Lake) -> None:
    with pytest.raises(ValueError, match="whole number of minutes"):
        MinuteBarSink(local_lake, bucket=dt.timedelta(seconds=90))


def test_quarantine_sink_writes_reasons_and_payloads(local_lake: Lake) -> None:
    items = [
        Rejected({"raw": "{oops"}, "malformed JSON: x", NOW),
        Rejected({"ev": "T", "sym": "AAPL", "p": 1.0, "s": 1, "t": 1}, LATE, NOW),
    ]
    part = QuarantineSink(local_lake).build("quarantine", 3, 4)
    part.write_batch(items)
    part.write_batch(items)  # the same batch again (a replay) lands on the same file
    (entry,) = local_lake.list("quarantine/live/2025-01-02")
    assert entry.key.startswith("quarantine/live/2025-01-02/part-w3-")
    t = local_lake.read_table(entry.key)
    assert t.schema == QUARANTINE
    assert t["reason"].to_pylist() == ["malformed JSON: x", "late"]
    assert t["symbol"].to_pylist() == [None, "AAPL"]
    assert json.loads(t["payload"][1].as_py())["p"] == 1.0


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
