"""The live flow as deployed: the command line of the ECS task (also the Dockerfile's and
compose's), on an emulated Kinesis stream, SIGKILLed mid-stream and started again. Trades put
while it was down are still in the stream, so nothing may be lost, and the epoch replayed after
the last snapshot may not count twice: every minute bar must equal the trades' own aggregate.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml

from core.aws import client
from core.lake import Lake
from dataflows.connectors.kinesis import KinesisSink
from dataflows.ingest import frame_records

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
SYMBOLS = [f"S{i:02d}" for i in range(20)]
MINUTES = 14
T0 = dt.datetime(2025, 1, 3, 14, 31, tzinfo=dt.UTC)  # 09:31 New York, a regular session


def ecs_live_command() -> list[str]:
    """The live container's command in the ECS module, with its locals filled in."""
    text = (ROOT / "terraform" / "modules" / "ecs" / "main.tf").read_text()
    block = re.search(r'"live"\s*=\s*\{\s*command\s*=\s*\[([^\]]*)\]', text)
    assert block, "no live command in terraform/modules/ecs/main.tf"
    path = re.search(r'recovery_path\s*=\s*"([^"]+)"', text)
    assert path, "no recovery_path local"
    words = [w.strip() for w in block.group(1).split(",")]
    return [path.group(1) if w == "local.recovery_path" else json.loads(w) for w in words]


def deployed_commands() -> dict[str, list[str]]:
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    dockerfile = re.sub(r"\\\n", " ", (ROOT / "docker" / "Dockerfile").read_text())
    stage = re.split(r"(?m)^FROM .* AS dataflow\s*$", dockerfile)[1].split("\nFROM ")[0]
    cmd = re.search(r"(?m)^CMD (\[.*\])\s*$", stage)
    assert cmd, "the dataflow stage has no CMD"
    return {
        "ecs": ecs_live_command(),
        "compose": compose["services"]["live"]["command"],
        "dockerfile": json.loads(cmd.group(1)),
    }


def test_every_deployment_runs_the_live_flow_with_recovery() -> None:
    commands = deployed_commands()
    assert commands["ecs"] == commands["compose"] == commands["dockerfile"], commands
    cmd = commands["ecs"]
    assert cmd[:4] == ["python", "-m", "bytewax.run", "dataflows.live:flow"]
    assert "-r" in cmd and "-s" in cmd and "-b" in cmd, cmd
    recovery = (ROOT / "terraform" / "modules" / "ecs" / "recovery.tf").read_text()
    assert 'resource "aws_efs_file_system" "recovery"' in recovery


# -- the trades, and the truth they imply --------------------------------------------------
def trades() -> list[dict[str, Any]]:
    """Every symbol trades every 2 s for MINUTES minutes; a few trades share a millisecond."""
    out = []
    base = int(T0.timestamp() * 1000)
    for second in range(0, MINUTES * 60, 2):
        for k, sym in enumerate(SYMBOLS):
            price = round(50 + k + ((second * 7 + k * 3) % 23) / 10, 2)
            size = 1 + (second + k) % 7
            out.append({"ev": "T", "sym": sym, "p": price, "s": size, "t": base + second * 1000})
    return out


def records(events: list[dict[str, Any]]) -> list[tuple[str, bytes]]:
    """What the ws-ingest task puts for one WebSocket frame per second of trades."""
    frames: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        frames[e["t"]].append(e)
    return [r for _, evs in sorted(frames.items()) for r in frame_records(json.dumps(evs))]


def truth(events: list[dict[str, Any]]) -> dict[tuple[str, dt.datetime], tuple[float, int]]:
    """(symbol, minute start) -> (volume, trades)."""
    out: dict[tuple[str, dt.datetime], tuple[float, int]] = {}
    for e in events:
        ts = dt.datetime.fromtimestamp(e["t"] / 1000, dt.UTC).replace(second=0, microsecond=0)
        v, n = out.get((e["sym"], ts), (0.0, 0))
        out[(e["sym"], ts)] = (v + e["s"], n + 1)
    return out


def lake_minutes(lake: Lake) -> dict[tuple[str, dt.datetime], tuple[float, int]]:
    """The lake's minute bars, one per (symbol, start): the latest revision, newest write."""
    keys = [e.key for e in lake.list("bronze/raw_ohlcv_1m", suffix=".parquet")]
    if not keys:
        return {}
    table = pa.concat_tables(
        [lake.read_table(k) for k in keys], promote_options="default"
    ).to_pylist()
    rank: dict[tuple[str, dt.datetime], tuple[tuple[int, dt.datetime], tuple[float, int]]] = {}
    for r in table:
        key = (r["symbol"], r["start"])
        order = (r.get("revision") or 0, r["ingested_at"])
        if key not in rank or order >= rank[key][0]:
            rank[key] = (order, (r["volume"], r["trades"]))
    return {k: v for k, (_, v) in rank.items()}


# -- the process ----------------------------------------------------------------------------
@pytest.fixture()
def stream(aws_endpoint: str) -> Iterator[str]:
    kinesis = client("kinesis", endpoint_url=aws_endpoint)
    name = f"ticks-{uuid.uuid4().hex[:10]}"
    kinesis.create_stream(StreamName=name, ShardCount=2)
    kinesis.get_waiter("stream_exists").wait(
        StreamName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 100}
    )
    try:
        yield name
    finally:
        kinesis.delete_stream(StreamName=name, EnforceConsumerDeletion=True)


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, *cmd[1:]], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def wait_for(done: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path, s: float) -> None:
    deadline = time.monotonic() + s
    while not done():
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.25)


def test_sigkill_and_restart_with_the_deployed_command_loses_and_doubles_nothing(
    stream: str,
    aws_endpoint: str,
    tmp_path: Path,
    redis_server_url: str,
    redis_prefix: str,
) -> None:
    cmd = ecs_live_command()
    recovery = tmp_path / "recovery"  # the EFS volume's mount point, here
    cmd[cmd.index("-r") + 1] = str(recovery)
    lake = Lake((tmp_path / "lake").as_uri())
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("KINESIS_START", "POLYGON_API_KEY", "LIVE_SYMBOLS", "DATABASE_URL")
    }
    env.update(
        KINESIS_STREAM=stream,
        AWS_ENDPOINT_URL=aws_endpoint,
        LAKE_URL=lake.url,
        REDIS_URL=redis_server_url,
        REDIS_PREFIX=redis_prefix,
        DATA_DIR=str(tmp_path / "data"),
    )
    events = trades()
    want = truth(events)
    half = len(events) // 2
    sink = KinesisSink(stream, endpoint_url=aws_endpoint).build("test", 0, 1)
    sink.write_batch(records(events[:half]))

    log = tmp_path / "live.log"
    first = start(cmd, env, log)
    try:
        wait_for(lambda: len(lake_minutes(lake)) >= 3 * len(SYMBOLS), first, log, 90)
        time.sleep(6)  # past one snapshot (-s 5): the restart resumes from it, not the start
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    assert any(recovery.glob("part-*.sqlite3")), "the first start made no recovery store"

    sink.write_batch(records(events[half:]))  # put while the flow is down: Kinesis keeps them
    second = start(cmd, env, log)
    try:
        wait_for(lambda: set(want) <= set(lake_minutes(lake)), second, log, 120)
        time.sleep(2)  # late revisions, if any, land
    finally:
        second.send_signal(signal.SIGINT)
        try:
            second.wait(15)
        except subprocess.TimeoutExpired:
            second.kill()
    got = lake_minutes(lake)
    lost = sorted(k for k in want if k not in got)
    wrong = sorted(k for k in want if k in got and got[k] != want[k])
    assert not lost, f"{len(lost)} minutes lost, e.g. {lost[:3]}"
    assert not wrong, (
        f"{len(wrong)} minutes miscounted, e.g. {[(k, got[k], want[k]) for k in wrong[:3]]}"
    )
