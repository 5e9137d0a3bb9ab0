"""Throughput of the live flow on one worker: the minute fold alone, and the whole flow.

``python -m benchmarks.live_fold [--ticks N] [--symbols S]``. Ticks are synthetic, stamped
at a market-like rate with up to 2 s of jitter (inside the 5 s lateness, so nothing is late),
and built before the clock starts. Sinks only count, so the numbers are Bytewax plus our
operators, not Redis or the lake.

* ``fold``: Tick objects -> key by symbol -> :func:`dataflows.operators.minute_bars`.
* ``flow``: raw JSON frames of 100 events -> :func:`dataflows.live.build_live_flow` (parse,
  validate, live view and fold).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import time
from collections.abc import Callable
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import TestingSource, run_main

from core.records import Tick
from dataflows.live import build_live_flow
from dataflows.operators import minute_bars

T0 = dt.datetime(2025, 1, 2, 14, 30, tzinfo=dt.UTC)


class _Count(StatelessSinkPartition[Any]):
    def __init__(self, counter: list[int]) -> None:
        self.counter = counter

    def write_batch(self, items: list[Any]) -> None:
        self.counter[0] += len(items)


class CountSink(DynamicSink[Any]):
    """Counts what reaches it."""

    def __init__(self) -> None:
        self.counter = [0]

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Count:
        """A counting partition."""
        return _Count(self.counter)


def events(n: int, symbols: int, rate: float, seed: int = 1) -> list[dict[str, Any]]:
    """``n`` T events over ``symbols`` tickers at ``rate`` per second, jittered up to 2 s."""
    rng = random.Random(seed)
    names = [f"S{i:04d}" for i in range(symbols)]
    t0 = int(T0.timestamp() * 1000)
    out = []
    for i in range(n):
        ms = t0 + int(i / rate * 1000) - rng.randrange(0, 2000)
        out.append(
            {"ev": "T", "sym": names[i % symbols], "p": 100 + rng.random(), "s": 100, "t": ms}
        )
    return out


def timed(build: Callable[[], Dataflow]) -> float:
    """Seconds to run the flow to completion."""
    flow = build()
    start = time.perf_counter()
    run_main(flow)  # type: ignore[no-untyped-call]
    return time.perf_counter() - start


def fold_rate(ticks: list[Tick]) -> tuple[float, int]:
    """Ticks per second through key_on + the minute fold, and bars produced."""
    sink = CountSink()

    def build() -> Dataflow:
        flow = Dataflow("bench_fold")
        s = op.input("in", flow, TestingSource(ticks, batch_size=1000))
        keyed = op.key_on("key", s, lambda t: t.symbol)
        out = minute_bars("minute", keyed, dt.timedelta(seconds=5))
        op.output("bars", out.bars, sink)
        op.output("rejected", out.rejected, CountSink())
        return flow

    return len(ticks) / timed(build), sink.counter[0]


def flow_rate(evs: list[dict[str, Any]]) -> float:
    """Ticks per second through the whole live flow from raw frames."""
    frames = [json.dumps(evs[i : i + 100]) for i in range(0, len(evs), 100)]
    counts = CountSink()

    def build() -> Dataflow:
        return build_live_flow(
            TestingSource(frames, batch_size=10),
            bars=CountSink(),
            live=counts,
            quarantine=CountSink(),
        )

    rate = len(evs) / timed(build)
    assert counts.counter[0] > 0
    return rate


def main() -> None:
    """Run both measurements and print ticks/s."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.live_fold", description=__doc__)
    p.add_argument("--ticks", type=int, default=1_000_000)
    p.add_argument("--symbols", type=int, default=500)
    p.add_argument("--rate", type=float, default=3000.0, help="simulated ticks per second")
    args = p.parse_args()
    evs = events(args.ticks, args.symbols, args.rate)
    t0_ms = int(T0.timestamp() * 1000)
    ticks = [
        Tick(
            symbol=e["sym"],
            price=e["p"],
            size=e["s"],
            ts=T0 + dt.timedelta(milliseconds=e["t"] - t0_ms),
        )
        for e in evs
    ]
    rate, bars = fold_rate(ticks)
    print(f"fold: {rate:,.0f} ticks/s ({len(ticks):,} ticks -> {bars:,} bars)")
    print(f"flow: {flow_rate(evs):,.0f} ticks/s (parse + validate + live view + fold)")


if __name__ == "__main__":
    main()
