"""Throughput and latency of the live flow, one process, Redis and lake sinks on.

``python -m benchmarks.live_fold [--trades N] [--symbols S]``. Trades are synthetic, in frames
of 100 events (a WebSocket frame or a Kinesis record) read 20 frames at a time (one chunk),
with a realistic condition mix (a third odd lots) and up to 2 s of disorder, so nothing is
late. Both runs below fold the same trades into minute bars under the same rules and write to
a real Redis (embedded) in the same run:

* ``flow``: :func:`dataflows.live.build_live_flow` with :class:`RedisLiveSink` and
  :class:`MinuteBarSink` on a local lake.
* ``baseline``: a plain-Python loop: decode each frame, fold each trade into a per-(symbol,
  minute) accumulator, write the latest trade and the live bar to Redis once per frame.

Then the flow is fed at a fixed rate (default 20,000 trades/s) from a paced source, and the
time from a chunk's read to its Redis write is measured (p50, p99).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bytewax.inputs import DynamicSource, StatelessSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import TestingSink, TestingSource, run_main

from benchmarks.report import write_section
from core.conditions import fallback
from core.embedded import redis_url
from core.lake import Lake
from core.stores.redis import LiveStore, connect
from dataflows.connectors.minute_sink import MinuteBarSink
from dataflows.connectors.redis_sink import RedisLiveSink
from dataflows.live import build_live_flow
from dataflows.minute_fold import FoldOut
from dataflows.trades import Chunk, now_ms

T0_MS = int(dt.datetime(2025, 1, 2, 14, 30, tzinfo=dt.UTC).timestamp() * 1000)
FRAME = 100
CHUNK = 20


def events(n: int, symbols: int, rate: float, seed: int = 1) -> list[dict[str, Any]]:
    """``n`` trades over ``symbols`` tickers at ``rate`` per second of market time."""
    rng = random.Random(seed)
    names = [f"S{i:04d}" for i in range(symbols)]
    out = []
    for i in range(n):
        ms = T0_MS + int(i / rate * 1000) - rng.randrange(0, 2000)
        odd = rng.random() < 0.35
        ev: dict[str, Any] = {
            "ev": "T", "sym": names[i % symbols], "p": round(100 + rng.random(), 2),
            "s": rng.randrange(1, 100) if odd else 100, "t": ms, "x": 4, "i": str(i), "q": i,
        }  # fmt: skip
        if odd:
            ev["c"] = [37]
        out.append(ev)
    return out


def frames(evs: list[dict[str, Any]]) -> list[str | bytes]:
    """JSON frames of ``FRAME`` events."""
    return [json.dumps(evs[i : i + FRAME]) for i in range(0, len(evs), FRAME)]


def chunks(fr: list[str | bytes]) -> list[Chunk]:
    """Chunks of ``CHUNK`` frames."""
    return [Chunk("p0", fr[i : i + CHUNK], 0) for i in range(0, len(fr), CHUNK)]


def flow_rate(evs: list[dict[str, Any]], url: str, lake: Lake) -> float:
    """Trades per second through the whole flow."""
    ch = chunks(frames(evs))
    flow = build_live_flow(
        TestingSource(ch),
        bars=MinuteBarSink(lake),
        live=RedisLiveSink(url, "bench:flow:"),
        quarantine=TestingSink([]),
    )
    start = time.perf_counter()
    run_main(flow)  # type: ignore[no-untyped-call]
    return len(evs) / (time.perf_counter() - start)


def baseline_rate(evs: list[dict[str, Any]], url: str) -> float:
    """Trades per second through a plain-Python loop doing the same fold and Redis writes."""
    rules = fallback()
    store = LiveStore(connect(url), "bench:base:")
    accs: dict[tuple[str, int], list[Any]] = {}
    start = time.perf_counter()
    for frame in frames(evs):
        latest: dict[str, dict[str, Any]] = {}
        bars: dict[str, dict[str, Any]] = {}
        for ev in json.loads(frame):
            rule = rules.combined(ev.get("c"))
            t = ev["t"]
            key = (ev["sym"], t - t % 60_000)
            acc = accs.get(key)
            if acc is None:
                acc = accs[key] = [None, None, -1e300, 1e300, 0.0, 0.0, 0]
            p, s = ev["p"], ev["s"]
            if rule.open_close:
                acc[0] = p if acc[0] is None else acc[0]
                acc[1] = p
            if rule.high_low:
                acc[2], acc[3] = max(acc[2], p), min(acc[3], p)
            if rule.volume:
                acc[4] += s
                acc[5] += p * s
                acc[6] += 1
            latest[ev["sym"]] = {"price": p, "size": s, "t": t}
            bars[ev["sym"]] = {"start": key[1], "o": acc[0], "c": acc[1], "v": acc[4]}
        store.write_live(latest=latest, forming=bars, final={}, events=[], metrics={}, ttl_s=60)
    return len(evs) / (time.perf_counter() - start)


class _Paced(StatelessSourcePartition[Chunk]):
    def __init__(self, fr: list[str | bytes], rate: float) -> None:
        self._it: Iterator[int] = iter(range(0, len(fr), CHUNK))
        self._fr = fr
        self._every = CHUNK * FRAME / rate
        self._next = time.monotonic()

    def next_batch(self) -> list[Chunk]:
        i = next(self._it)
        wait = self._next - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._next += self._every
        return [Chunk("p0", self._fr[i : i + CHUNK], now_ms(), caught_up=True)]


class PacedSource(DynamicSource[Chunk]):
    """Chunks released at ``rate`` trades per second, stamped when released."""

    def __init__(self, fr: list[str | bytes], rate: float) -> None:
        self.fr, self.rate = fr, rate

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Paced:
        """One paced partition."""
        return _Paced(self.fr, self.rate)


class _Timed(StatelessSinkPartition[FoldOut]):
    def __init__(self, inner: StatelessSinkPartition[FoldOut], lags: list[float]) -> None:
        self.inner, self.lags = inner, lags

    def write_batch(self, items: list[FoldOut]) -> None:
        self.inner.write_batch(items)
        done = now_ms()
        self.lags.extend(done - o.read_at for o in items if o.read_at)


class TimedRedisSink(DynamicSink[FoldOut]):
    """The Redis sink, recording read-to-written milliseconds per chunk."""

    def __init__(self, inner: RedisLiveSink) -> None:
        self.inner = inner
        self.lags: list[float] = []

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Timed:
        """Wrap the inner partition."""
        return _Timed(self.inner.build(step_id, worker_index, worker_count), self.lags)


def latency(evs: list[dict[str, Any]], url: str, lake: Lake, rate: float) -> tuple[float, ...]:
    """(p50, p99, max) ms from a chunk's read to its Redis write at ``rate`` trades/s."""
    sink = TimedRedisSink(RedisLiveSink(url, "bench:lat:"))
    flow = build_live_flow(
        PacedSource(frames(evs), rate),
        bars=MinuteBarSink(lake),
        live=sink,
        quarantine=TestingSink([]),
    )
    run_main(flow)  # type: ignore[no-untyped-call]
    lags = sorted(sink.lags)
    return lags[len(lags) // 2], lags[int(len(lags) * 0.99)], lags[-1]


def main() -> None:
    """Run the measurements, print them and write BENCHMARKS.md's live section."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.live_fold", description=__doc__)
    p.add_argument("--trades", type=int, default=1_000_000)
    p.add_argument("--symbols", type=int, default=500)
    p.add_argument("--rate", type=float, default=20_000.0, help="paced trades per second")
    p.add_argument("--paced-seconds", type=float, default=20.0)
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = redis_url(Path(tmp))
        lake = Lake((Path(tmp) / "lake").as_uri())
        evs = events(args.trades, args.symbols, 3000.0)
        flow = flow_rate(evs, url, lake)
        base = baseline_rate(evs, url)
        paced = events(int(args.rate * args.paced_seconds), args.symbols, args.rate, seed=2)
        p50, p99, worst = latency(paced, url, Lake((Path(tmp) / "lake2").as_uri()), args.rate)
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = f"""## Live flow (`python -m benchmarks.live_fold`)

{args.trades:,} synthetic trades over {args.symbols} symbols (a third odd lots), frames of
{FRAME} events read {CHUNK} at a time; one process, one worker; Redis embedded, lake local.
Measured {when}.

| run | trades/s |
| --- | ---: |
| whole flow (decode, dedupe, event-time fold, Redis and lake sinks) | {flow:,.0f} |
| baseline: plain-Python loop, same fold and Redis writes, same run | {base:,.0f} |

Flow / baseline: {flow / base:.2f}x. Target: at least 5x the old flow's 8-11k trades/s
(>= 50,000 trades/s): {"met" if flow >= 50_000 else "**not met**"}.

Paced at {args.rate:,.0f} trades/s for {args.paced_seconds:.0f} s: read to Redis p50
{p50:.0f} ms, p99 {p99:.0f} ms, max {worst:.0f} ms (target p99 < 150 ms:
{"met" if p99 < 150 else "**not met**"}).
"""
    print(body)
    if not args.no_write:
        write_section("live", body)


if __name__ == "__main__":
    main()
