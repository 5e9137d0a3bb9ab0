"""Throughput and latency of the live flow, one process, Redis and lake sinks on.

``python -m benchmarks.live_fold [--trades N] [--symbols S]``. Trades are synthetic, in frames
of 100 events (a WebSocket frame or a Kinesis record) read 20 frames at a time (one chunk),
with a realistic condition mix (a third odd lots) and up to 2 s of disorder, so nothing is
late. Both runs below fold the same trades into minute bars under the same rules and write to
a real Redis (embedded) in the same run:

* ``flow``: :func:`dataflows.live.build_live_flow` as production composes it: Redis (bars,
  latest trades, 5m..4h rollups; forming bars published every ``LIVE_PUBLISH_MS`` by default)
  and the local lake (minute fragments, trades archive, provisional daily bars, quarantine).
* ``baseline``: a plain-Python loop: decode each frame, fold each trade into a per-(symbol,
  minute) accumulator, write the latest trade and the live bar to Redis once per frame.

Then the flow is fed at a fixed rate (default 20,000 trades/s) from a paced source, and the
time from a trade's read to the Redis write that carries it is measured (p50, p99: per
publication, from the read of the oldest trade it carries).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bytewax.dataflow import Dataflow
from bytewax.inputs import DynamicSource, Source, StatelessSourcePartition
from bytewax.outputs import DynamicSink, Sink, StatelessSinkPartition
from bytewax.testing import TestingSource, run_main

from benchmarks.report import write_section
from core.bronze import BronzeSink
from core.conditions import fallback
from core.embedded import redis_url
from core.lake import Lake
from core.settings import LiveSettings
from core.stores.redis import LiveStore, connect
from dataflows.connectors.minute_sink import MinuteBarSink
from dataflows.connectors.quarantine_sink import QuarantineSink
from dataflows.connectors.redis_sink import RedisLiveSink
from dataflows.connectors.rollup_sink import RollupRedisSink
from dataflows.connectors.trades_sink import TradesArchiveSink
from dataflows.live import build_live_flow, tune_gc
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


_DEFAULTS = LiveSettings.model_fields
PUBLISH = dt.timedelta(milliseconds=_DEFAULTS["live_publish_ms"].default)
ROLLUP_PUBLISH = dt.timedelta(milliseconds=_DEFAULTS["live_rollup_publish_ms"].default)


def whole_flow(
    source: Source[Chunk], live: Sink[FoldOut], url: str, lake: Lake, prefix: str
) -> Dataflow:
    """The production composition (minus the gap sink, which needs Postgres)."""
    return build_live_flow(
        source,
        bars=MinuteBarSink(lake),
        live=live,
        quarantine=QuarantineSink(lake, "live"),
        trades=TradesArchiveSink(lake),
        rollups=RollupRedisSink(url, prefix),
        daily=BronzeSink(lake),
        publish_every=PUBLISH,
        rollup_every=ROLLUP_PUBLISH,
    )


def flow_rate(fr: list[str | bytes], n: int, url: str, lake: Lake) -> tuple[float, float]:
    """Trades per second through the whole flow: per wall second, per CPU second."""
    prefix = "bench:flow:"
    flow = whole_flow(TestingSource(chunks(fr)), RedisLiveSink(url, prefix), url, lake, prefix)
    start, cpu = time.perf_counter(), time.process_time()
    run_main(flow)  # type: ignore[no-untyped-call]
    return n / (time.perf_counter() - start), n / (time.process_time() - cpu)


def baseline_rate(fr: list[str | bytes], n: int, url: str) -> tuple[float, float]:
    """Trades per (wall, CPU) second through a plain-Python loop doing the same fold and writes."""
    rules = fallback()
    store = LiveStore(connect(url), "bench:base:")
    accs: dict[tuple[str, int], list[Any]] = {}
    start, cpu = time.perf_counter(), time.process_time()
    for frame in fr:
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
    return n / (time.perf_counter() - start), n / (time.process_time() - cpu)


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
        self.lags.extend(done - o.since for o in items if o.since)


class TimedRedisSink(DynamicSink[FoldOut]):
    """The Redis sink, recording per publication the milliseconds from the read of the oldest
    trade it carries to its write."""

    def __init__(self, inner: RedisLiveSink) -> None:
        self.inner = inner
        self.lags: list[float] = []

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Timed:
        """Wrap the inner partition."""
        return _Timed(self.inner.build(step_id, worker_index, worker_count), self.lags)


def latency(fr: list[str | bytes], url: str, lake: Lake, rate: float) -> tuple[float, ...]:
    """(p50, p99, max) ms from a chunk's read to its Redis write at ``rate`` trades/s, and the
    late trades the flow itself counted (its ``metrics:live`` hashes in Redis)."""
    sink = TimedRedisSink(RedisLiveSink(url, "bench:lat:"))
    run_main(whole_flow(PacedSource(fr, rate), sink, url, lake, "bench:lat:"))  # type: ignore[no-untyped-call]
    lags = sorted(sink.lags)
    counters = LiveStore(connect(url), "bench:lat:").live_metrics().values()
    late = sum(int(m.get("late", "0") or 0) for m in counters)
    return lags[len(lags) // 2], lags[int(len(lags) * 0.99)], lags[-1], late


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
        # frames only (strings): the input's dicts would be traversed by every GC pass
        fr = frames(events(args.trades, args.symbols, 3000.0))
        load = os.getloadavg()[0]
        warm = frames(events(20_000, args.symbols, 3000.0, seed=3))
        flow_rate(warm, 20_000, url, Lake((Path(tmp) / "warm").as_uri()))  # imports, scripts
        tune_gc()  # as flow_from_settings does (the baseline runs under it too)
        flow = flow_rate(fr, args.trades, url, lake)
        base = baseline_rate(fr, args.trades, url)
        paced = frames(events(int(args.rate * args.paced_seconds), args.symbols, args.rate, seed=2))
        p50, p99, worst, late = latency(paced, url, Lake((Path(tmp) / "lake2").as_uri()), args.rate)
        load = max(load, os.getloadavg()[0])
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = f"""## Live flow (`python -m benchmarks.live_fold`)

{args.trades:,} synthetic trades over {args.symbols} symbols (a third odd lots), frames of
{FRAME} events read {CHUNK} at a time; one process, one worker; Redis embedded, lake local.
Measured {when}, load average up to {load:.1f} on {os.cpu_count()} cores.

| run | trades/s (wall) | trades per CPU second |
| --- | ---: | ---: |
| whole flow (decode, dedupe, event-time fold, Redis and lake sinks) | {flow[0]:,.0f} | {flow[1]:,.0f} |
| baseline: plain-Python loop, same fold and Redis writes, same run | {base[0]:,.0f} | {base[1]:,.0f} |

Flow / baseline: {flow[0] / base[0]:.2f}x (wall), {flow[1] / base[1]:.2f}x (CPU; the process's
threads, not the Redis server's). Target: at least 5x the old flow's 8-11k trades/s
(>= 50,000 trades/s): {"met" if flow[0] >= 50_000 else "**not met**"}.

Paced at {args.rate:,.0f} trades/s for {args.paced_seconds:.0f} s: read to Redis p50
{p50:.0f} ms, p99 {p99:.0f} ms, max {worst:.0f} ms; late trades counted by the flow: {late:,.0f}
(target p99 < 150 ms with 0 late: {"met" if p99 < 150 and late == 0 else "**not met**"}).
"""
    print(body)
    if not args.no_write:
        write_section("live", body)


if __name__ == "__main__":
    main()
