"""Throughput and latency of the live flow, one process, Redis and lake sinks on.

``python -m benchmarks.live_fold [--trades N] [--symbols S]``. Trades are synthetic, in frames
of 100 events (a WebSocket frame or a Kinesis record) read 20 frames at a time (one chunk),
with a realistic condition mix (a third odd lots) and up to 2 s of disorder, so nothing is
late. Both runs below fold the same trades into minute bars under the same rules and write to
a real Redis (embedded) in the same run:

* ``flow``: :func:`dataflows.live.build_live_flow` as production composes it: Redis (bars,
  latest trades, 5m..4h rollups; forming bars published every ``LIVE_PUBLISH_MS`` by default)
  and the local lake (minute fragments, trades archive, provisional daily bars, quarantine);
  not the gap and alert sinks, which need PostgreSQL.
* ``baseline``: a plain-Python loop: decode each frame, fold each trade into a per-(symbol,
  minute) accumulator, write the latest trade and the live bar to Redis once per frame.

Then the flow is fed at a fixed rate (default 20,000 trades/s, market time running as fast as
the wall clock) from a paced source, and the time from a trade's arrival to the Redis write
that carries it is measured (p50, p99: per publication, from the arrival of the oldest trade
it carries). Arrival is the chunk's scheduled time, so time spent behind counts. The run starts
5 s before a minute's end, so its first minute closes after 10 s and, with the default 75 s, a
full minute of trades closes while it runs: the flow's costliest moment is measured.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import random
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
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
from dataflows.minute_fold import MINUTE_MS, FoldOut
from dataflows.rollups import RollupBar, WindowSums
from dataflows.trades import Chunk, now_ms

T0_MS = int(dt.datetime(2025, 1, 2, 14, 30, tzinfo=dt.UTC).timestamp() * 1000)
PACED_T0_MS = T0_MS + 55_000
"""The paced run starts 5 s before a minute's end: its first close comes after 10 s."""
FRAME = 100
CHUNK = 20


def events(
    n: int, symbols: int, rate: float, seed: int = 1, t0_ms: int = T0_MS
) -> Iterator[dict[str, Any]]:
    """``n`` trades over ``symbols`` tickers at ``rate`` per second of market time from ``t0_ms``."""
    rng = random.Random(seed)
    names = [f"S{i:04d}" for i in range(symbols)]
    for i in range(n):
        ms = t0_ms + int(i / rate * 1000) - rng.randrange(0, 2000)
        odd = rng.random() < 0.35
        ev: dict[str, Any] = {
            "ev": "T", "sym": names[i % symbols], "p": round(100 + rng.random(), 2),
            "s": rng.randrange(1, 100) if odd else 100, "t": ms, "x": 4, "i": str(i), "q": i,
        }  # fmt: skip
        if odd:
            ev["c"] = [37]
        yield ev


def frames(evs: Iterable[dict[str, Any]]) -> list[str | bytes]:
    """JSON frames of ``FRAME`` events (generated as they are framed: only strings are kept)."""
    it = iter(evs)
    out: list[str | bytes] = []
    while frame := list(islice(it, FRAME)):
        out.append(json.dumps(frame))
    return out


def chunks(fr: list[str | bytes]) -> list[Chunk]:
    """Chunks of ``CHUNK`` frames."""
    return [Chunk("p0", fr[i : i + CHUNK], 0) for i in range(0, len(fr), CHUNK)]


_DEFAULTS = LiveSettings.model_fields
PUBLISH = dt.timedelta(milliseconds=_DEFAULTS["live_publish_ms"].default)
SNAPSHOT = dt.timedelta(seconds=5)
"""Production's snapshot interval (``-s 5``): every snapshot waits for the trades archive."""


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
        rollups=RollupRedisSink[RollupBar](url, prefix),
        sums=RollupRedisSink[WindowSums](url, prefix),
        daily=BronzeSink(lake),
        publish_every=PUBLISH,
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
    """Releases chunk k at ``start + k * every`` and stamps it with that time, not the time it
    was read: a flow that falls behind is charged for the wait (no coordinated omission)."""

    def __init__(self, fr: list[str | bytes], rate: float) -> None:
        self._fr = fr
        self._k = 0
        self._every = CHUNK * FRAME / rate
        self._wall, self._mono = time.time(), time.monotonic()

    def _due(self, k: int) -> float:
        return self._mono + k * self._every

    def next_awake(self) -> dt.datetime | None:
        """When the next chunk arrives."""
        wall = self._wall + self._k * self._every
        return dt.datetime.fromtimestamp(wall, dt.UTC)

    def next_batch(self) -> list[Chunk]:
        if self._k * CHUNK >= len(self._fr):
            raise StopIteration
        now = time.monotonic()
        out = []
        while self._k * CHUNK < len(self._fr) and self._due(self._k) <= now:
            i = self._k * CHUNK
            arrived = round((self._wall + self._k * self._every) * 1000)
            self._k += 1
            behind = self._k * CHUNK < len(self._fr) and self._due(self._k) <= now
            out.append(Chunk("p0", self._fr[i : i + CHUNK], arrived, caught_up=not behind))
        return out


class PacedSource(DynamicSource[Chunk]):
    """Chunks arriving at ``rate`` trades per second, each stamped with its arrival time."""

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


@dataclass(frozen=True)
class Latency:
    """Read-to-Redis latency of a paced run, per publication."""

    p50: float
    p99: float
    worst: float
    samples: int
    late: int
    """Late trades the flow itself counted (its ``metrics:live`` hashes in Redis)."""


def latency(fr: list[str | bytes], url: str, lake: Lake, rate: float) -> Latency:
    """Milliseconds from a chunk's arrival to the Redis write that carries it, at ``rate``."""
    sink = TimedRedisSink(RedisLiveSink(url, "bench:lat:"))
    flow = whole_flow(PacedSource(fr, rate), sink, url, lake, "bench:lat:")
    run_main(flow, epoch_interval=SNAPSHOT)  # type: ignore[no-untyped-call]
    lags = sorted(sink.lags)
    counters = LiveStore(connect(url), "bench:lat:").live_metrics().values()
    late = sum(int(m.get("late", "0") or 0) for m in counters)
    p99 = lags[min(len(lags) - 1, math.ceil(len(lags) * 0.99) - 1)]
    return Latency(lags[len(lags) // 2], p99, lags[-1], len(lags), late)


def closes(t0_ms: int, seconds: float, rate: float) -> list[int]:
    """Trades of each minute the paced run closes while it runs (not at its end)."""
    end = t0_ms + seconds * 1000 - _DEFAULTS["live_lateness_s"].default * 1000
    first = t0_ms - t0_ms % MINUTE_MS + MINUTE_MS
    return [
        round((min(e, t0_ms + seconds * 1000) - max(e - MINUTE_MS, t0_ms)) / 1000 * rate)
        for e in range(first, int(end) + 1, MINUTE_MS)
    ]


class LoadSampler(threading.Thread):
    """The 1-minute load average, sampled every second while the benchmark runs."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples = [os.getloadavg()[0]]
        self.stopped = threading.Event()

    def run(self) -> None:
        """Sample until stopped."""
        while not self.stopped.wait(1.0):
            self.samples.append(os.getloadavg()[0])


def main() -> None:
    """Run the measurements, print them and write BENCHMARKS.md's live section."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.live_fold", description=__doc__)
    p.add_argument("--trades", type=int, default=1_000_000)
    p.add_argument("--symbols", type=int, default=500)
    p.add_argument("--rate", type=float, default=20_000.0, help="paced trades per second")
    p.add_argument(
        "--paced-seconds",
        type=float,
        default=75.0,
        help="paced run length; it starts 5 s before a minute's end, so 75 s close a full minute",
    )
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args()
    if args.trades < 1 or args.symbols < 1 or args.rate <= 0 or args.paced_seconds <= 0:
        p.error("--trades, --symbols, --rate and --paced-seconds must be positive")
    load = LoadSampler()
    idle = load.samples[0]
    load.start()
    with tempfile.TemporaryDirectory() as tmp:
        url = redis_url(Path(tmp))
        lake = Lake((Path(tmp) / "lake").as_uri())
        # frames only (strings): the input's dicts would be traversed by every GC pass
        fr = frames(events(args.trades, args.symbols, 3000.0))
        warm = frames(events(20_000, args.symbols, 3000.0, seed=3))
        flow_rate(warm, 20_000, url, Lake((Path(tmp) / "warm").as_uri()))  # imports, scripts
        tune_gc()  # as flow_from_settings does (the baseline runs under it too)
        print(f"whole flow: {args.trades:,} trades ...", flush=True)
        flow = flow_rate(fr, args.trades, url, lake)
        print("baseline ...", flush=True)
        base = baseline_rate(fr, args.trades, url)
        del fr
        t0 = PACED_T0_MS
        n_paced = int(args.rate * args.paced_seconds)
        paced = frames(events(n_paced, args.symbols, args.rate, seed=2, t0_ms=t0))
        print(f"paced: {args.rate:,.0f} trades/s for {args.paced_seconds:.0f} s ...", flush=True)
        lat = latency(paced, url, Lake((Path(tmp) / "lake2").as_uri()), args.rate)
    load.stopped.set()
    shut = closes(t0, args.paced_seconds, args.rate)
    crossed = (
        f"{len(shut)} minute close(s) while it ran (of {', '.join(f'{n:,}' for n in shut)} trades)"
        if shut
        else "**no minute close while it ran** (use --paced-seconds 75 or more)"
    )
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = f"""## Live flow (`python -m benchmarks.live_fold`)

{args.trades:,} synthetic trades over {args.symbols} symbols (a third odd lots), frames of
{FRAME} events read {CHUNK} at a time; one process, one worker; Redis embedded, lake local.
Measured {when} on {os.cpu_count()} cores: load average {idle:.1f} before the run, up to
{max(load.samples):.1f} during it (the benchmark itself counts for about 1).

| run | trades/s (wall) | trades per CPU second |
| --- | ---: | ---: |
| whole flow (decode, dedupe, event-time fold, Redis and lake sinks) | {flow[0]:,.0f} | {flow[1]:,.0f} |
| baseline: plain-Python loop, same run (see below) | {base[0]:,.0f} | {base[1]:,.0f} |

The baseline decodes each frame, folds each trade into its (symbol, minute) OHLCV under the
same condition rules and writes latest trades and bars to the same Redis once per frame; it
does no deduplication, lateness, rollups or lake writes. Flow / baseline: {flow[0] / base[0]:.2f}x
(wall), {flow[1] / base[1]:.2f}x (CPU; the process's threads, not the Redis server's). Target: at
least 5x the old flow's 8-11k trades/s (>= 50,000 trades/s):
{"met" if flow[0] >= 50_000 else "**not met**"}.

Paced at {args.rate:,.0f} trades/s for {args.paced_seconds:.0f} s ({n_paced:,} trades, {crossed}):
from a chunk's arrival (its scheduled time, so a flow that falls behind is charged for the
wait) to the Redis write carrying it, over {lat.samples:,} publications: p50 {lat.p50:.0f} ms,
p99 {lat.p99:.0f} ms, max {lat.worst:.0f} ms; late trades counted by the flow: {lat.late:,}
(target p99 < 150 ms with 0 late: {"met" if lat.p99 < 150 and lat.late == 0 else "**not met**"}).
"""
    print(body)
    if not args.no_write:
        write_section("live", body)


if __name__ == "__main__":
    main()
