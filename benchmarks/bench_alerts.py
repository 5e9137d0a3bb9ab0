"""Trade to alert on the WebSocket: the live flow with 10,000 rules over 5,000 symbols.

``python -m benchmarks.bench_alerts [--rules N] [--symbols S] [--rate R] [--seconds T]``.

Every process is real: the live flow (this process, one worker, with its Redis, rollup, lake
and alert sinks), the API (``python -m api`` in a subprocess), embedded Postgres and Redis, and
one WebSocket per owner in a listener subprocess. Trades are random walks per symbol, stamped
with the time the paced source was due to release them, moved into a regular session (from
09:30:55 New York on the next session, or ``--clock``, so minutes close and 5m..4h bars form and close as in
the market whatever day the benchmark runs, and after every rule was made): an alert's
``event_at``, less that shift, is when its trade was due, and its arrival on the socket gives
the latency. The trades are made before the run (the flow's process only reads them); a read
holds 20 ms of them, and a flow that fell behind reads every read due since in one, up to 100
frames, as the WebSocket source reads what waits in its socket. Rules: 80% price
levels (near each symbol's price, so they cross now and then), 20% bar rules on 1m (percent
move, volume spike, EMA cross, RSI band), spread over 20 owners; the per-owner limit is raised
so no alert is summarised.

Baseline, same run: the same rules checked by a plain loop over every rule for every trade
(margin and state machine per rule, no index), timed over a sample of the same trades; its
rate is compared with the paced rate (below it, the backlog and the latency grow without end).

Also reported: the flow process's CPU (all its threads) and the Redis server's over the run,
and the SETs and PUBLISHes Redis executed per second (the documents and publications the live
sinks cost it). ``--profile PATH`` runs the flow under cProfile on every thread of the process
(the worker and the sinks' writer threads), each thread's CPU time (``--profile-wall``: wall
time, where threads wait), prints the costliest functions and saves the statistics to PATH.
``--timeline PATH`` writes each alert's due time and latency, to see when in the run the slow
ones came (a minute close).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from bytewax.inputs import DynamicSource, StatelessSourcePartition
from bytewax.testing import TestingSink, run_main

from api.auth import owner_id
from benchmarks.live_fold import PUBLISH
from benchmarks.report import write_section
from benchmarks.threadprof import ThreadProfiles
from core import alerts, calendar
from core.alert_engine import Engine
from core.alerts import Arm, Rule
from core.embedded import postgres_url, redis_url
from core.lake import Lake
from core.settings import ApiSettings
from core.stores import alerts as store
from core.stores.postgres import migrate
from core.stores.redis import connect
from dataflows.alerts import FeedConfig, feed_factory
from dataflows.connectors.alert_sink import AlertSink
from dataflows.connectors.minute_sink import MinuteBarSink
from dataflows.connectors.redis_sink import RedisLiveSink
from dataflows.connectors.rollup_sink import RollupRedisSink
from dataflows.live import build_live_flow, tune_gc
from dataflows.rollups import RollupBar, WindowSums
from dataflows.trades import Chunk, now_ms

OWNERS = 20
FRAME = 100
READ_FRAMES = 100
"""Frames a read takes at most when it is behind: PolygonChunkSource's default batch."""
PREFIX = "bench:alerts:"


def keys() -> list[str]:
    """One API key per owner."""
    return [f"bench-owner-{i:02d}-" + "k" * 24 for i in range(OWNERS)]


def names(n: int) -> list[str]:
    return [f"S{i:04d}" for i in range(n)]


def make_rules(
    n: int, symbols: list[str], seed: int = 3
) -> list[tuple[str, str, str, str, dict[str, Any]]]:
    """(owner, symbol, timeframe, kind, params) of ``n`` rules."""
    rng = random.Random(seed)
    owners = [owner_id(k) for k in keys()]
    out = []
    for i in range(n):
        sym, owner = symbols[i % len(symbols)], owners[i % OWNERS]
        if i % 5:
            level = round(100 + rng.uniform(-0.6, 0.6), 2)
            out.append((owner, sym, "1m", "price_cross",
                        {"level": level, "direction": rng.choice(["above", "below"])}))  # fmt: skip
        else:
            kind = ("percent_move", "volume_spike", "ema_cross", "rsi_exit")[i // 5 % 4]
            params: dict[str, Any] = {"percent": 0.5} if kind == "percent_move" else {}
            if kind == "volume_spike":
                params = {"factor": 2.0, "bars": 5}
            out.append((owner, sym, "1m", kind, params))
    return out


LAG: list[int] = []
"""Per read, milliseconds the flow read its trades after they were due."""
OFFSET: list[int] = [0]
"""Market time minus wall time (ms): trades are stamped in a regular session, whatever the day."""


CLOCK = dt.time(9, 30, 55)
"""New York time of the first trade by default: a minute closes 5 s in (10 s with the lateness
allowed), and every 5m..4h window opens with it."""


def market_start(clock: dt.time = CLOCK) -> int:
    """Unix ms of ``clock`` New York on the next session.

    Every rule exists before it (a rule never fires on an earlier trade).
    """
    day = calendar.next_session(dt.datetime.now(dt.UTC).date())
    at = dt.datetime.combine(day, clock, tzinfo=calendar.NEW_YORK)
    if not calendar.session_open(day) <= at < calendar.session_close(day):
        msg = f"--clock {clock} is outside the regular session (09:30-16:00 New York)"
        raise SystemExit(msg)
    return int(at.timestamp() * 1000)


def walk_frames(symbols: list[str], rate: float, seconds: float, t0: int) -> list[list[str]]:
    """Each read's trades (20 ms of them) as WebSocket frames, in market time from ``t0``.

    Made before the run, so the flow's process spends nothing on generating them.
    """
    rng = random.Random(7)
    price = dict.fromkeys(symbols, 100.0)
    per_read = max(1, int(rate / 50))
    left, seq = int(rate * seconds), 0
    reads: list[list[str]] = []
    while left > 0:
        t = t0 + int(len(reads) * per_read / rate * 1000)
        n = min(per_read, left)
        left -= n
        evs = []
        for _ in range(n):
            sym = symbols[rng.randrange(len(symbols))]
            p = price[sym] = max(1.0, price[sym] + rng.gauss(0, 0.05))
            seq += 1
            evs.append({"ev": "T", "sym": sym, "p": round(p, 2), "s": 100, "t": t, "x": 4,
                        "i": str(seq)})  # fmt: skip
        reads.append([json.dumps(evs[i : i + FRAME]) for i in range(0, len(evs), FRAME)])
    return reads


class _Walk(StatelessSourcePartition[Chunk]):
    def __init__(self, reads: list[list[str]], every: float, t0: int) -> None:
        self.reads = reads
        self.every = every
        self.k = 0
        self.next = time.monotonic()
        self.wall0 = 0.0  # wall clock (ms) of the first read, and its monotonic time
        self.mono0 = 0.0
        self.t0 = t0
        self.warm = False
        LAG.clear()
        OFFSET[0] = 0

    def next_batch(self) -> list[Chunk]:
        if self.k >= len(self.reads):
            raise StopIteration
        if not self.warm:
            # an empty read first: the flow's steps start (the alert step loads every rule)
            # before the clock does, as a flow in production started long before
            self.warm = True
            return [Chunk("p0", [], now_ms(), caught_up=True)]
        if not self.wall0:
            self.next = time.monotonic()
            self.wall0, self.mono0 = time.time() * 1000, self.next
            OFFSET[0] = self.t0 - int(self.wall0)
        wait = self.next - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        # the trades are stamped with when they were due, not when the flow got round to
        # reading them: a flow that falls behind the paced rate shows it in the latency (open
        # loop); in market time, a regular session's (a night or weekend run would otherwise
        # have no final bar, no 5m..4h bar and no bar alert: every minute is no session).
        # A flow that fell behind reads every read due since, up to the WebSocket source's
        # batch of frames, as PolygonChunkSource reads a socket's buffer
        first = self._due()
        frames: list[str | bytes] = []
        while self.k < len(self.reads) and (
            not frames
            or (
                self.next <= time.monotonic()
                and len(frames) + len(self.reads[self.k]) <= READ_FRAMES
            )
        ):
            LAG.append(max(0, now_ms() - self._due()))
            self.next += self.every
            frames += self.reads[self.k]
            self.k += 1
        behind = self.k < len(self.reads) and self.next <= time.monotonic()
        return [Chunk("p0", frames, first, caught_up=not behind)]

    def _due(self) -> int:
        """Wall ms the next read is due at."""
        return int(self.wall0 + (self.next - self.mono0) * 1000)


class WalkSource(DynamicSource[Chunk]):
    """Random-walk trades at ``rate`` per second for ``seconds``, released on schedule."""

    def __init__(
        self, symbols: list[str], rate: float, seconds: float, clock: dt.time = CLOCK
    ) -> None:
        self.t0 = market_start(clock)
        self.reads = walk_frames(symbols, rate, seconds, self.t0)
        self.every = max(1, int(rate / 50)) / rate

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Walk:
        """One paced partition."""
        return _Walk(self.reads, self.every, self.t0)


def baseline_rate(rules: list[Rule], symbols: list[str], sample: int = 2000) -> float:
    """Trades per second of a plain loop over every rule per trade."""
    rng = random.Random(7)
    price = dict.fromkeys(symbols, 100.0)
    arms = {r.id: Arm() for r in rules}
    trade_rules = [r for r in rules if r.on_trades]
    start = time.perf_counter()
    for i in range(sample):
        sym = symbols[rng.randrange(len(symbols))]
        p = price[sym] = price[sym] + rng.gauss(0, 0.05)
        for r in trade_rules:
            if r.symbol == sym:
                alerts.step(r, arms[r.id], alerts.price_margin(r, p), i)
    return sample / (time.perf_counter() - start)


def engine_rate(rules: list[Rule], symbols: list[str], n: int = 200_000) -> float:
    """Trades per second of the engine alone (index, bands) over the same kind of trades."""
    rng = random.Random(7)
    price = dict.fromkeys(symbols, 100.0)
    syms, ps = [], []
    for _ in range(n):
        sym = symbols[rng.randrange(len(symbols))]
        price[sym] += rng.gauss(0, 0.05)
        syms.append(sym)
        ps.append(price[sym])
    eng = Engine()
    eng.set_rules(rules)
    times = list(range(n))
    start = time.perf_counter()
    for i in range(0, n, 400):
        eng.on_trade_batch(syms[i : i + 400], times[i : i + 400], ps[i : i + 400],
                           [str(j) for j in range(i, min(n, i + 400))])  # fmt: skip
    return n / (time.perf_counter() - start)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _listen(port: int, out: Path, stop: Path) -> None:
    """One socket per owner; each alert's id, event time and arrival, until ``stop`` exists
    and the sockets have been quiet for 3 s."""
    import websockets

    lines: list[str] = []
    ready: list[str] = []

    async def one(key: str) -> None:
        url = f"ws://127.0.0.1:{port}/v1/stream?symbols=NONE&api_key={key}"
        async with websockets.connect(url, max_queue=None) as ws:
            await ws.recv()  # subscribed
            ready.append(key)
            if len(ready) == OWNERS:
                out.with_suffix(".ready").touch()
            quiet = 0.0
            while not stop.exists() or quiet < 3.0:
                try:
                    raw = await asyncio.wait_for(ws.recv(), timeout=0.5)
                except TimeoutError:
                    quiet += 0.5
                    continue
                quiet = 0.0
                msg = json.loads(raw)
                if msg.get("type") == "alert":
                    at = dt.datetime.fromisoformat(msg["data"]["event_at"]).timestamp() * 1000
                    lines.append(f"{msg['data']['id']} {at:.0f} {time.time() * 1000:.0f}")

    await asyncio.gather(*(one(k) for k in keys()))
    out.write_text("\n".join(lines))


def redis_load(url: str) -> tuple[float, dict[str, int]]:
    """The server's CPU seconds so far and its calls per command (scripts' calls included)."""
    client = connect(url)
    try:
        cpu = client.info("cpu")
        calls = {
            name.removeprefix("cmdstat_"): int(v["calls"])
            for name, v in client.info("commandstats").items()
        }
    finally:
        client.close()
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]), calls


def _pct(values: list[Any], q: float) -> float:
    return float(values[min(len(values) - 1, int(len(values) * q))]) if values else float("nan")


def main() -> None:
    """Run the measurement, print it and write BENCHMARKS.md's alerts section."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_alerts", description=__doc__)
    p.add_argument("--rules", type=int, default=10_000)
    p.add_argument("--symbols", type=int, default=5_000)
    p.add_argument("--rate", type=float, default=20_000.0, help="trades per second")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument(
        "--clock", type=dt.time.fromisoformat, default=CLOCK, metavar="HH:MM:SS",
        help="New York time of the first trade (default 09:30:55: 5m..4h windows open at the "
        "first close); 09:59:55 closes the 5m, 15m and 30m windows of every symbol at 10:00",
    )  # fmt: skip
    p.add_argument(
        "--no-bars", action="store_true",
        help="no bar updates on Redis (isolates the alert path from the bar relay's load)",
    )  # fmt: skip
    p.add_argument(
        "--rollup-publish-ms",
        type=int,
        default=int(ApiSettings.model_fields["live_rollup_publish_ms"].default),
        help="the API's interval between a symbol's forming 5m..4h bars on a WebSocket"
        " (LIVE_ROLLUP_PUBLISH_MS); default: the setting's default",
    )
    p.add_argument(
        "--profile", type=Path, metavar="PATH",
        help="cProfile the flow's process (worker and writer threads) into PATH; slows it",
    )  # fmt: skip
    p.add_argument(
        "--profile-wall", action="store_true",
        help="with --profile: wall time (where threads wait) instead of each thread's CPU",
    )  # fmt: skip
    p.add_argument(
        "--timeline", type=Path, metavar="PATH",
        help="write each alert received as 'due_ms latency_ms' (due: wall ms since the epoch) to "
        "PATH, to see when in the run the slow ones came",
    )  # fmt: skip
    p.add_argument("--listen", nargs=3, metavar=("PORT", "OUT", "STOP"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.listen:
        asyncio.run(_listen(int(args.listen[0]), Path(args.listen[1]), Path(args.listen[2])))
        return
    symbols = names(args.symbols)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pg, rd = postgres_url(root / "pg"), redis_url(root / "redis")
        with psycopg.connect(pg, autocommit=True) as conn:
            migrate(conn)
            for owner, sym, tf, kind, params in make_rules(args.rules, symbols):
                store.create_rule(conn, store.NewRule(owner, sym, tf, kind,
                                                      alerts.check_params(kind, params)))  # fmt: skip
            rules = store.active_rules(conn)
        base = baseline_rate(rules, symbols)
        engine = engine_rate(rules, symbols)
        port = free_port()
        env = {**os.environ, "DATABASE_URL": pg, "REDIS_URL": rd, "REDIS_PREFIX": PREFIX,
               "API_KEYS": ",".join(keys()), "LAKE_URL": (root / "lake").as_uri(),
               "LIVE_ROLLUP_PUBLISH_MS": str(args.rollup_publish_ms)}  # fmt: skip
        api = subprocess.Popen([sys.executable, "-m", "api", "--port", str(port)], env=env)
        out = root / "received.txt"
        listener = None
        try:
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.2)
            stop = root / "stop"
            listener = subprocess.Popen([sys.executable, "-m", "benchmarks.bench_alerts",
                                         "--listen", str(port), str(out), str(stop)])  # fmt: skip
            for _ in range(600):  # every socket subscribed before the first trade
                if out.with_suffix(".ready").exists() or listener.poll() is not None:
                    break
                time.sleep(0.1)
            lake = Lake((root / "lake").as_uri())
            flow = build_live_flow(
                WalkSource(symbols, args.rate, args.seconds, args.clock),
                bars=MinuteBarSink(lake),
                live=TestingSink([]) if args.no_bars else RedisLiveSink(rd, PREFIX),
                quarantine=TestingSink([]),
                rollups=None if args.no_bars else RollupRedisSink[RollupBar](rd, PREFIX),
                sums=None if args.no_bars else RollupRedisSink[WindowSums](rd, PREFIX),
                alerts=AlertSink(pg, rd, PREFIX, max_per_minute=1_000_000),
                alert_feed=feed_factory(FeedConfig(pg, rd, PREFIX), None),
                publish_every=PUBLISH,
            )  # fmt: skip
            tune_gc()  # as flow_from_settings does
            cpu0, calls0 = redis_load(rd)
            flow_cpu = time.process_time()
            started = time.perf_counter()
            if args.profile is not None:
                with ThreadProfiles(wall=args.profile_wall) as profiles:
                    run_main(flow)  # type: ignore[no-untyped-call]
                profiles.dump(args.profile)
                print(profiles.report(), file=sys.stderr)
            else:
                run_main(flow)  # type: ignore[no-untyped-call]
            elapsed = time.perf_counter() - started
            flow_cpu = time.process_time() - flow_cpu
            cpu1, calls1 = redis_load(rd)
            stop.touch()
            listener.wait(timeout=120)
        finally:
            for proc in (api, listener):
                if proc is not None and proc.poll() is None:
                    proc.terminate()
                    proc.wait(timeout=10)
        with psycopg.connect(pg, autocommit=True) as conn:
            stored = conn.execute("SELECT count(*) FROM alert_events").fetchone()
            to_db = sorted(
                r[0]
                for r in conn.execute(
                    "SELECT extract(epoch FROM fired_at - event_at) * 1000 + %s FROM alert_events",
                    (OFFSET[0],),
                ).fetchall()
            )
        got = [line.split() for line in out.read_text().splitlines()] if out.exists() else []
    lags = sorted(int(r) - int(a) + OFFSET[0] for _, a, r in got)
    if args.timeline is not None:
        args.timeline.write_text(
            "".join(f"{int(a) - OFFSET[0]} {int(r) - int(a) + OFFSET[0]}\n" for _, a, r in got)
        )
    n = len(lags)
    p50 = lags[n // 2] if n else float("nan")
    p99 = lags[min(n - 1, int(n * 0.99))] if n else float("nan")
    worst = lags[-1] if n else float("nan")
    trades = int(args.rate * args.seconds)
    sets = calls1.get("set", 0) - calls0.get("set", 0)
    pubs = calls1.get("publish", 0) - calls0.get("publish", 0)
    lag = sorted(LAG)
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    mode = (" --no-bars" if args.no_bars else "") + (
        f" --clock {args.clock}" if args.clock != CLOCK else ""
    )
    bars_note = (
        "Bar updates are not published (`--no-bars`): the alert path alone."
        if args.no_bars
        else "Bar updates (minute and 5m..4h, forming and final) are published as in production "
        f"(forming minute bars and latest trades every {PUBLISH.total_seconds() * 1000:.0f} ms, "
        "final bars at once, 5m..4h window summaries as minutes close), each on its symbol's "
        "channel, which the API's hub reads only for the symbols its sockets follow (the "
        "listener's sockets follow none); the hub forms a followed symbol's forming 5m..4h "
        f"bars at most every {args.rollup_publish_ms / 1000:g} s."
    )
    body = f"""## Alerts (`python -m benchmarks.bench_alerts{mode}`)

{args.rules:,} active rules (80% price levels on trades, 20% 1m bar rules) over
{args.symbols:,} symbols and {OWNERS} owners; {trades:,} random-walk trades paced at
{args.rate:,.0f}/s for {args.seconds:.0f} s through the whole live flow (one process, one
worker; Redis, rollup, lake and alert sinks), the API in its own process, one WebSocket per
owner. {bars_note} Each trade is stamped with the time it was due at the paced rate (open
loop: a flow that falls behind shows it in every latency below); reads hold 20 ms of trades,
and a flow that fell behind reads everything due since (up to 100 frames), as the WebSocket
source reads what waits in its socket. Measured {when}, one-minute
load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.

| measure | value |
| --- | ---: |
| flow wall time for {args.seconds:.0f} s of trades (start-up and rule load included) | {elapsed:.1f} s |
| trades read after they were due: p50 / p99 / max | {_pct(lag, 0.5):.0f} / {_pct(lag, 0.99):.0f} / {max(lag, default=0):.0f} ms |
| alerts stored / received on the WebSockets | {stored[0] if stored else 0:,} / {n:,} |
| trade to alert on the WebSocket p50 / p99 / max | {p50} / {p99} / {worst} ms |
| trade to alert stored in Postgres p50 / p99 | {_pct(to_db, 0.5):.0f} / {_pct(to_db, 0.99):.0f} ms |
| flow process CPU (every thread; share of one core) | {flow_cpu:.1f} s ({flow_cpu / elapsed:.0%}) |
| Redis server CPU during the flow (share of one core) | {cpu1 - cpu0:.1f} s ({(cpu1 - cpu0) / elapsed:.0%}) |
| Redis SETs / PUBLISHes per second of flow (scripts' included) | {sets / elapsed:,.0f} / {pubs / elapsed:,.0f} |
| engine alone (rule index, price bands) | {engine:,.0f} trades/s |
| baseline: plain loop over every rule per trade, same rules | {base:,.0f} trades/s |

Target p99 < 250 ms: {"met" if n and p99 < 250 else "**not met**"}. The baseline checks
{base:,.0f} trades/s against every rule, {base / args.rate:.2f}x the paced rate
({"enough" if base >= args.rate else "too slow: its backlog, and the latency, grow without end"}).
"""
    print(body)
    if not args.no_write:
        section = "alerts-no-bars" if args.no_bars else "alerts"
        write_section(section if args.clock == CLOCK else f"{section}-clock", body)


if __name__ == "__main__":
    main()
