"""Event time and recovery of the live flow on emulated Kinesis, against the truth of the trades put.

- a backlog: the flow starts 10 s behind a 20k trades/s stream and loses nothing;
- a pause: the deployed process is SIGSTOPped for 20 s while trades keep coming (stamped with
  the wall clock), and after SIGCONT every minute equals the trades' own aggregate;
- a crash: the deployed process is SIGKILLed after a snapshot, half the trades are put while it
  is down, and after its restart its minute bars are byte-equal to those of an uninterrupted run
  of the same command over the whole stream.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from bytewax.testing import TestingSink, run_main

from batch.engine.minutes import merge
from core.lake import Lake
from dataflows.connectors.kinesis import KinesisSink, KinesisSource
from dataflows.live import build_live_flow
from dataflows.minute_fold import MinuteBar
from tests.integration.test_live_recovery_deployed import (
    ecs_live_command,
    lake_minutes,
    records,
    start,
    stream,
    truth,
    wait_for,
)
from tests.tape_truth import truth_bars

pytestmark = [pytest.mark.integration, pytest.mark.slow]
__all__ = ["stream"]  # the fixture, shared with the deployed recovery test
SYMBOLS = [f"E{i:02d}" for i in range(40)]


def _now_ms() -> int:
    return int(time.time() * 1000)


def burst(t0: int, seconds: int, per_second: int) -> list[dict[str, Any]]:
    """``per_second`` trades a second over ``seconds``, round robin over the symbols."""
    out = []
    for k in range(seconds * per_second):
        sym = SYMBOLS[k % len(SYMBOLS)]
        t = t0 + k * 1000 // per_second
        price = round(20 + (k * 37 % 1000) / 100, 2)
        out.append({"ev": "T", "sym": sym, "p": price, "s": 1 + k % 9, "t": t, "x": 4,
                    "i": str(k), "q": k})  # fmt: skip
    return out


def batched_records(events: list[dict[str, Any]], per_frame: int) -> list[tuple[str, bytes]]:
    frames = [json.dumps(events[i : i + per_frame]) for i in range(0, len(events), per_frame)]
    from dataflows.ingest import frame_records

    return [r for f in frames for r in frame_records(f)]


def test_a_flow_ten_seconds_behind_at_20k_trades_a_second_loses_nothing(
    stream: str, aws_endpoint: str
) -> None:
    t0 = int(dt.datetime(2025, 1, 3, 15, 10, 55, tzinfo=dt.UTC).timestamp() * 1000)
    events = burst(t0, 10, 20_000)  # the stream holds 10 s of trades when the flow starts
    KinesisSink(stream, endpoint_url=aws_endpoint).build("t", 0, 1).write_batch(
        batched_records(events, 2000)
    )
    finals: list[tuple[str, list[MinuteBar]]] = []
    outs: list[Any] = []
    rejects: list[Any] = []
    source = KinesisSource(
        stream, endpoint_url=aws_endpoint, start="TRIM_HORIZON", stop_at_end=True
    )
    flow = build_live_flow(
        source, bars=TestingSink(finals), live=TestingSink(outs), quarantine=TestingSink(rejects)
    )
    run_main(flow)  # type: ignore[no-untyped-call]
    assert rejects == []
    late = sum(o.counters.get("late", 0) for o in outs if not o.part)  # the EOF totals
    trades = sum(o.counters["trades"] for o in outs if not o.part)
    assert (late, trades) == (0, len(events))
    got: dict[tuple[str, int], MinuteBar] = {}
    for _, bars in finals:
        for b in bars:
            got[(b.symbol, b.start)] = b
    want = truth_bars(events)
    assert set(got) == set(want)
    for key, w in want.items():
        b = got[key]
        assert (b.volume, b.trades, b.high, b.low, b.revision) == (
            w["volume"], w["trades"], w["high"], w["low"], 0,
        ), key  # fmt: skip


def _env(
    stream: str, aws_endpoint: str, lake: Lake, tmp: Path, redis: str, prefix: str
) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("KINESIS_START", "POLYGON_API_KEY", "LIVE_SYMBOLS", "DATABASE_URL")
    }
    env.update(
        KINESIS_STREAM=stream, AWS_ENDPOINT_URL=aws_endpoint, LAKE_URL=lake.url,
        REDIS_URL=redis, REDIS_PREFIX=prefix, DATA_DIR=str(tmp / "data"),
    )  # fmt: skip
    return env


def _command(recovery: Path) -> list[str]:
    cmd = ecs_live_command()
    cmd[cmd.index("-r") + 1] = str(recovery)
    return cmd


def archived(lake: Lake) -> set[tuple[str, str]]:
    """(symbol, id) of every trade in the lake's trades archive."""
    out: set[tuple[str, str]] = set()
    for entry in lake.list("bronze/trades/"):
        t = lake.read_table(entry.key, columns=["symbol", "id"])
        out.update(zip(t["symbol"].to_pylist(), t["id"].to_pylist(), strict=True))
    return out


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def test_a_flow_paused_20_s_with_sigstop_loses_nothing(
    stream: str, aws_endpoint: str, tmp_path: Path, redis_server_url: str, redis_prefix: str
) -> None:
    lake = Lake((tmp_path / "lake").as_uri())
    env = _env(stream, aws_endpoint, lake, tmp_path, redis_server_url, redis_prefix)
    sink = KinesisSink(stream, endpoint_url=aws_endpoint).build("t", 0, 1)
    # Event time follows the wall clock from 14:31:25 of a session, so the last trade (after
    # 35 s) ends its minute and the flow closes it as soon as the partition is idle.
    wall0 = _now_ms()
    base = int(dt.datetime(2025, 1, 3, 14, 31, 25, tzinfo=dt.UTC).timestamp() * 1000)
    sent: list[dict[str, Any]] = []
    done = threading.Event()

    def produce() -> None:
        k = 0
        while (elapsed := _now_ms() - wall0) < 35_000:
            evs = []
            for _ in range(200):  # about 2,000 trades a second
                sym = SYMBOLS[k % 20]
                evs.append({"ev": "T", "sym": sym, "p": round(30 + k % 97 / 10, 2),
                            "s": 1 + k % 5, "t": base + elapsed // 1000 * 1000, "x": 1, "i": str(k)})  # fmt: skip
                k += 1
            sink.write_batch(records(evs))
            sent.extend(evs)
            time.sleep(0.1)
        done.set()

    log = tmp_path / "live.log"
    proc = start(_command(tmp_path / "recovery"), env, log)
    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    try:
        time.sleep(8)
        proc.send_signal(signal.SIGSTOP)  # paused 20 s while trades keep arriving
        time.sleep(20)
        proc.send_signal(signal.SIGCONT)
        assert done.wait(30)
        want = truth(sent)
        wait_for(lambda: set(want) <= set(lake_minutes(lake)), proc, log, 60)
        time.sleep(1)
    finally:
        proc.send_signal(signal.SIGCONT)
        _stop(proc)
    got = lake_minutes(lake)
    wrong = {k: (got.get(k), v) for k, v in want.items() if got.get(k) != v}
    assert not wrong, (
        f"{len(wrong)} of {len(want)} minutes lost or miscounted: {list(wrong.items())[:3]}"
    )
    assert lake.list("quarantine") == []  # nothing rejected as too late


def _bars(lake: Lake) -> pa.Table:
    keys = [e.key for e in lake.list("bronze/raw_ohlcv_1m", suffix=".parquet")]
    return merge(pa.concat_tables([lake.read_table(k) for k in keys]))


def test_sigkill_and_restart_gives_bars_byte_equal_to_an_uninterrupted_run(
    stream: str, aws_endpoint: str, tmp_path: Path, redis_server_url: str, redis_prefix: str
) -> None:
    t0 = int(dt.datetime(2025, 1, 3, 15, 0, tzinfo=dt.UTC).timestamp() * 1000)
    events = burst(t0, 4 * 60, 60)
    half = len(events) // 2  # two minutes: the rest is put while the flow is down
    put = KinesisSink(stream, endpoint_url=aws_endpoint).build("t", 0, 1)
    put.write_batch(batched_records(events[:half], 100))
    want = truth([{**e, "t": e["t"] // 1000 * 1000} for e in events])  # keys on the minute
    runs: dict[str, Lake] = {}
    sent = {(e["sym"], e["i"]) for e in events}
    seen_at_kill = 0
    for name in ("killed", "clean"):
        lake = runs[name] = Lake((tmp_path / name / "lake").as_uri())
        env = _env(stream, aws_endpoint, lake, tmp_path / name, redis_server_url, redis_prefix)
        log = tmp_path / f"{name}.log"
        cmd = _command(tmp_path / name / "recovery")
        proc = start(cmd, env, log)
        try:
            if name == "killed":
                wait_for(lambda: len(lake_minutes(lake)) >= len(SYMBOLS), proc, log, 60)  # noqa: B023
                time.sleep(5.5)  # past a snapshot (-s 5)
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                seen_at_kill = len(lake_minutes(lake))
                put.write_batch(batched_records(events[half:], 100))
                proc = start(cmd, env, log)
            wait_for(lambda: set(want) <= set(lake_minutes(lake)), proc, log, 90)  # noqa: B023
            # every trade reaches the archive too (the kill came after a snapshot flushed it)
            wait_for(lambda: archived(lake) == sent, proc, log, 30)  # noqa: B023
        finally:
            _stop(proc)
    assert 0 < seen_at_kill < len(want)
    clean, killed = _bars(runs["clean"]), _bars(runs["killed"])
    assert clean.num_rows == len(want)
    assert killed.equals(clean)  # byte-equal rows, ingested_at included
