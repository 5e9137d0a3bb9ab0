"""The serving API under load: ``python -m benchmarks.bench_api``, this design against the old.

A synthetic market (``benchmarks/synthetic.py``) is resampled to 34-session bars; the last five
years and a month go to an embedded Postgres and every symbol gets a latest trade in an
embedded Redis. Two servers then take turns on the same data: the old design (the tree at
:data:`BASELINE_REF`, extracted with ``git archive``: a DuckDB per Fibonacci request, a Postgres
connection per daily request) and this one. A separate process (``benchmarks.loadgen``) sends
an open-loop load at each rate for ``--duration`` seconds per scenario, with paths spread over
every symbol, and reports latency from each request's due time.

Targets at 500 req/s: p99 latest quote <= 10 ms, five years of 1d <= 30 ms, the full 34d
history <= 50 ms. ``--quick`` checks the harness in a minute (small market, low rate).
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import httpx
import pyarrow.compute as pc

from batch import resample
from benchmarks import synthetic
from benchmarks.report import write_section
from core import embedded, layout
from core.settings import CACHE_WINDOW_DAYS
from core.stores import postgres
from core.stores.redis import LiveStore, connect

ROOT = Path(__file__).resolve().parent.parent
BASELINE_REF = "e937e7c"
"""The last commit of the serving design this one replaces."""
KEY = "bench-key-" + "Zq7w" * 8
SCENARIOS = ("latest", "daily5y", "fib34")
TARGETS_MS = {"latest": 10.0, "daily5y": 30.0, "fib34": 50.0}


def prepare(spec: synthetic.Spec, work: Path) -> tuple[str, str, str, list[str], dt.date]:
    """Lake, Postgres and Redis filled for the run: (lake url, db url, redis url, symbols, last)."""
    lake = synthetic.working_copy(spec, "api")
    t0 = time.perf_counter()
    resample.run(lake, intervals=(34,))
    print(f"resampled 34d in {time.perf_counter() - t0:.1f}s", flush=True)
    symbols = synthetic.symbol_names(spec.symbols)
    db_url = embedded.postgres_url(work / "postgres", stop_at_exit=True)
    cutoff = spec.last - dt.timedelta(days=CACHE_WINDOW_DAYS)
    with postgres.connect(db_url) as conn:
        postgres.migrate(conn)
        conn.execute("TRUNCATE raw_ohlcv")
        for s in symbols:
            t = lake.read_table(layout.consolidated(s))
            recent = t.filter(pc.greater_equal(t["date"], cutoff))
            postgres.upsert_daily(conn, recent)
        conn.commit()
    with postgres.connect(db_url, autocommit=True) as conn:
        # the bulk load's aftermath (autovacuum, analyze, a checkpoint) now, not while measuring
        conn.execute("VACUUM ANALYZE raw_ohlcv")
        conn.execute("CHECKPOINT")
    redis_url = embedded.redis_url(work / "redis")
    store = LiveStore(connect(redis_url), "bench:")
    ts = dt.datetime.combine(spec.last, dt.time(19, 59), dt.UTC).isoformat()
    trades = {s: {"price": 100.0, "size": 10, "ts": ts} for s in symbols}
    bars = {s: {"start": ts, "open": 100.0, "close": 100.5, "volume": 1e4} for s in symbols}
    store.set_live(trades, bars, publish=False)
    store.r.close()
    return lake.url, db_url, redis_url, symbols, spec.last


def baseline_tree(work: Path) -> Path:
    """The old design's ``api`` and ``core`` packages, extracted from git."""
    target = work / f"baseline-{BASELINE_REF}"
    if not (target / "api").exists():
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", BASELINE_REF, "api", "core"],
            check=True, capture_output=True,
        ).stdout  # fmt: skip
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(target, filter="data")
    return target


def serve(
    cwd: Path, env: dict[str, str], port: int, workers: int, log: Path
) -> subprocess.Popen[bytes]:
    """``python -m api`` from ``cwd`` (whose ``api`` package is the one served)."""
    args = [sys.executable, "-m", "api", "--port", str(port), "--log-level", "warning"]
    if cwd == ROOT:
        args += ["--workers", str(workers)]
    with log.open("ab") as out:
        proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the API in {cwd} exited: see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"the API in {cwd} did not answer in 60 s")


def paths(scenario: str, symbols: list[str], last: dt.date) -> list[str]:
    """The scenario's request paths, one per symbol, in a fixed shuffled order."""
    order = list(symbols)
    random.Random(15).shuffle(order)
    five = (last - dt.timedelta(days=5 * 365)).isoformat()
    fmt = {
        "latest": "/v1/latest/{s}",
        "daily5y": "/v1/bars/{s}?interval=1d&start=" + five,
        "fib34": "/v1/bars/{s}?interval=34d",
    }[scenario]
    return [fmt.format(s=s) for s in order]


def load(port: int, path_file: Path, rate: float, duration: float) -> dict[str, Any]:
    """One open-loop run from a separate process."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.loadgen", "--url", f"http://127.0.0.1:{port}",
         "--paths", str(path_file), "--rate", str(rate), "--duration", str(duration),
         "--header", f"X-API-Key: {KEY}"],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=duration * 2 + 300,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def warm(port: int, path_file: Path) -> float:
    """Ask every path of a scenario once, in turn (a server's steady state); seconds taken."""
    started = time.perf_counter()
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": KEY}) as http:
        for path in path_file.read_text().split():
            http.get(path, timeout=120)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_api", description=__doc__)
    p.add_argument("--symbols", type=int, default=500)
    p.add_argument("--rows", type=int, default=2_500_000, help="daily rows in the market")
    p.add_argument("--rates", default="100,250,500", help="requests per second, comma-separated")
    p.add_argument("--duration", type=float, default=60.0, help="seconds per rate and scenario")
    p.add_argument("--workers", type=int, default=2, help="worker processes of this design")
    p.add_argument("--quick", action="store_true", help="50 symbols, 50 req/s, 5 s: a smoke run")
    p.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    p.add_argument(
        "--rate-limit",
        type=int,
        default=0,
        help="API_RATE_LIMIT of the servers' key, per minute (0: none, the default); set one far"
        " above the load to measure the limiter's own cost",
    )
    p.add_argument(
        "--designs",
        default="baseline,this",
        help="which servers to run: baseline (the old design), this, or both (default)",
    )
    ns = p.parse_args(argv)
    if ns.quick:
        ns.symbols, ns.rows, ns.rates, ns.duration = 50, 150_000, "50", 5.0
    rates = [float(r) for r in ns.rates.split(",") if r]
    designs = {d.strip() for d in ns.designs.split(",") if d.strip()}
    if not designs or designs - {"baseline", "this"}:
        p.error("--designs takes baseline, this, or both (comma-separated)")
    work = synthetic.WORK / "api-bench"
    work.mkdir(parents=True, exist_ok=True)
    spec = synthetic.Spec(symbols=ns.symbols, target_rows=ns.rows)
    lake_url, db_url, redis_url, symbols, last = prepare(spec, work)
    env = {
        **os.environ, "LAKE_URL": lake_url, "DATABASE_URL": db_url, "REDIS_URL": redis_url,
        "REDIS_PREFIX": "bench:", "API_KEYS": KEY, "APP_ENV": "dev",
        "API_RATE_LIMIT": str(ns.rate_limit),
    }  # fmt: skip
    files = {}
    for scenario in SCENARIOS:
        files[scenario] = work / f"paths-{scenario}.txt"
        files[scenario].write_text("\n".join(paths(scenario, symbols, last)) + "\n")
    results: list[dict[str, Any]] = []
    loads = []
    measured = dt.datetime.now(dt.UTC)
    chosen = [("baseline", baseline_tree(work))] if "baseline" in designs else []
    chosen += [("this design", ROOT)] if "this" in designs else []
    for design, cwd in chosen:
        port = 18_700 + len(results)
        proc = serve(cwd, env, port, ns.workers, work / f"{design.replace(' ', '-')}.log")
        try:
            for scenario in SCENARIOS:
                warmed = warm(port, files[scenario])
                print(f"{design}: warmed {scenario} in {warmed:.1f}s", flush=True)
                for rate in rates:
                    loads.append(os.getloadavg()[0])
                    r = load(port, files[scenario], rate, ns.duration)
                    r.update(design=design, scenario=scenario)
                    results.append(r)
                    print(json.dumps(r), flush=True)
        finally:
            proc.terminate()
            proc.wait(30)
    body = report(results, spec, ns, rates, measured, loads)
    print(body)
    if not ns.no_write:
        write_section("api", body)
    return 0


def report(
    results: list[dict[str, Any]],
    spec: synthetic.Spec,
    ns: argparse.Namespace,
    rates: list[float],
    measured: dt.datetime,
    loads: list[float],
) -> str:
    """The BENCHMARKS.md section."""
    lines = [
        "## Serving API under load (`python -m benchmarks.bench_api`)",
        "",
        f"Synthetic market of {spec.symbols:,} symbols ({synthetic.rows_of(spec):,} daily rows,"
        f" to {spec.last}); 34d silver; the cache window in embedded Postgres; latest trades in"
        f" embedded Redis. Open loop from a separate process on loopback, {ns.duration:g} s per"
        f" rate and scenario, each request's symbol taken in turn over all {spec.symbols:,}, after"
        f" one warm-up pass asking every path of the scenario once (each design's steady state:"
        f" warm file caches, and for this design its answer cache);"
        f" latency from the request's due time. This design ran {ns.workers} worker(s); the"
        f" baseline is the tree at `{BASELINE_REF}` (one process). Measured"
        f" {measured:%Y-%m-%d %H:%M} UTC on 2 cores shared with the load generator, Postgres and"
        f" Redis; one-minute load average {min(loads):.1f} .. {max(loads):.1f}.",
        "",
        "Latencies are of answered requests; `failed` counts errors, non-200 answers and requests"
        " still unanswered 30 s after the last was sent (cancelled).",
        "",
        "| scenario | rate/s | design | achieved/s | p50 ms | p99 ms | max ms | failed | target p99 at 500/s |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        bad = r["errors"] + r["timed_out"] + sum(v for k, v in r["statuses"].items() if k != "200")
        target = TARGETS_MS[r["scenario"]]
        met = ""
        if r["rate"] == 500 and r["design"] == "this design":
            met = f"<= {target:g} ms: {'met' if r['p99_ms'] <= target else '**not met**'}"
        lines.append(
            f"| {r['scenario']} | {r['rate']:g} | {r['design']} | {r['achieved']:,} |"
            f" {r['p50_ms']:,} | {r['p99_ms']:,} | {r['max_ms']:,} | {bad} | {met} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
