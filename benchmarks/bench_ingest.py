"""Daily ingestion benchmark: the replay flow against the old one-request-per-symbol-per-day design.

``python -m benchmarks.bench_ingest [--symbols 5000] [--sessions 252] [--baseline-symbols 50]
[--baseline-sessions 10]``

A simulator in its own process (so it does not share our GIL) serves ``--symbols`` symbols over
``--sessions`` XNYS sessions. Measured end to end, from the first request to the last row in
the lake and Postgres:

1. the replay flow (``dataflows.replay.run``): one grouped-daily request per session, validation,
   ``range=`` files in the lake (at most one per symbol), ``raw_ohlcv`` upserts by COPY;
2. the baseline, as the old design did it, on a subset: one range request per (symbol,
   session), one ``date=`` fragment per (symbol, session), one upsert per request.

Both are reported per row (rows per second), with requests and files. Postgres is
``DATABASE_URL`` or an embedded server in a temporary directory; the lake is a temporary local
directory. Results go to the ``ingest`` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
from pydantic import SecretStr

from benchmarks import report
from core import calendar, layout
from core.lake import Lake
from core.settings import ReplaySettings
from core.stores import postgres
from core.validation import check_daily
from dataflows.backfill import aggs_table
from dataflows.connectors.polygon import PolygonGateway
from dataflows.simulator.process import SimulatorProcess

TARGET_ROWS_PER_S = 50_000
LOADS: list[float] = []
"""One-minute load averages sampled between the measurements."""


def cpu_seconds() -> float:
    """CPU seconds of this process so far (every thread), user plus system."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def sample_load() -> None:
    """Remember the machine's load, so a busy machine is visible beside the figures."""
    LOADS.append(os.getloadavg()[0])


@dataclass(frozen=True, slots=True)
class Measured:
    """One measurement."""

    rows: int
    seconds: float
    requests: int
    files: int
    symbols: int
    pg_rows: int
    max_files: int
    cpu: float = 0.0
    """CPU seconds of this process (the simulator's and Postgres's are not counted)."""

    @property
    def rate(self) -> float:
        """Rows per second."""
        return self.rows / self.seconds if self.seconds else 0.0


def files_per_symbol(lake: Lake) -> Counter[str]:
    """Bronze daily files by symbol."""
    out: Counter[str] = Counter()
    for e in lake.list(layout.DAILY, suffix=".parquet"):
        parsed = layout.parse_fragment(e.key)
        if parsed is not None:
            out[parsed[0]] += 1
    return out


def pg_count(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM raw_ohlcv").fetchone()
    return int(row[0]) if row else 0


def fresh_schema(server_url: str, name: str) -> str:
    """A URL whose search_path is a new empty schema ``name``."""
    from urllib.parse import quote

    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(psycopg.sql.Identifier(name))
        )
        conn.execute(psycopg.sql.SQL("CREATE SCHEMA {}").format(psycopg.sql.Identifier(name)))
    sep = "&" if "?" in server_url else "?"
    url = f"{server_url}{sep}options={quote(f'-c search_path={name}')}"
    with postgres.connect(url, autocommit=True) as conn:
        postgres.migrate(conn)
    return url


def settings_for(
    rest_url: str, lake: Lake, db_url: str, first: dt.date, last: dt.date
) -> ReplaySettings:
    return ReplaySettings(
        polygon_api_key=SecretStr("bench"),
        polygon_rest_url=rest_url,
        polygon_rps=10_000.0,
        lake_url=lake.url,
        database_url=SecretStr(db_url),
        replay_start=first,
        replay_end=last,
        replay_history_start=first,
    )


def run_replay(
    settings: ReplaySettings, lake: Lake, db_url: str, sessions: list[dt.date]
) -> Measured:
    """The replay flow over ``sessions``, end to end (in process, as ``python -m dataflows.replay``)."""
    from dataflows import replay

    started, cpu = time.perf_counter(), cpu_seconds()
    rep = replay.run(settings, sessions)
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    if not rep.ok:
        msg = f"the replay failed: {rep.summary()}"
        raise RuntimeError(msg)
    per_symbol = files_per_symbol(lake)
    rows = sum(
        lake.read_table(e.key, columns=["date"]).num_rows
        for e in lake.list(layout.DAILY, suffix=".parquet")
    )
    assert rows == rep.rows, (rows, rep.rows)
    return Measured(
        rows=rows,
        seconds=seconds,
        requests=len(sessions),
        files=sum(per_symbol.values()),
        symbols=len(per_symbol),
        pg_rows=pg_count(db_url),
        max_files=max(per_symbol.values(), default=0),
        cpu=cpu,
    )


def run_baseline(
    gateway: PolygonGateway, lake: Lake, db_url: str, symbols: list[str], sessions: list[dt.date]
) -> Measured:
    """The old design: per (symbol, session) one request, one fragment, one upsert."""
    rows = requests = 0
    started, cpu = time.perf_counter(), cpu_seconds()
    with postgres.connect(db_url, autocommit=True) as conn:
        for day in sessions:
            for s in symbols:
                body: dict[str, Any] = gateway.get_json(
                    f"/v2/aggs/ticker/{s}/range/1/day/{day.isoformat()}/{day.isoformat()}",
                    {"adjusted": "false"},
                )
                requests += 1
                results = body.get("results") or []
                if not results:
                    continue
                checked = check_daily(
                    aggs_table(s, results), source="rest", received_at=dt.datetime.now(dt.UTC)
                )
                if checked.valid.num_rows:
                    lake.write_table(layout.daily_fragment(s, day), checked.valid)
                    postgres.upsert_daily(conn, checked.valid)
                    rows += checked.valid.num_rows
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    per_symbol = files_per_symbol(lake)
    return Measured(
        rows=rows,
        seconds=seconds,
        requests=requests,
        files=sum(per_symbol.values()),
        symbols=len(per_symbol),
        pg_rows=pg_count(db_url),
        max_files=max(per_symbol.values(), default=0),
        cpu=cpu,
    )


def stage_breakdown(
    gateway: PolygonGateway, lake: Lake, db_url: str, sessions: list[dt.date], concurrency: int
) -> dict[str, tuple[float, float]]:
    """Seconds and CPU seconds (this process) of each stage run alone on the same data."""
    from concurrent.futures import ThreadPoolExecutor

    from core.bronze import BronzeWriter

    out: dict[str, tuple[float, float]] = {}
    clock = [time.perf_counter(), cpu_seconds()]

    def lap(name: str) -> None:
        now = [time.perf_counter(), cpu_seconds()]
        out[name] = (now[0] - clock[0], now[1] - clock[1])
        clock[:] = now

    with ThreadPoolExecutor(concurrency) as pool:
        answers = list(pool.map(gateway.grouped_daily_table, sessions))
    lap("fetch (grouped daily, JSON to columns)")
    now = dt.datetime.now(dt.UTC)
    tables = [check_daily(a[0], source="rest", received_at=now).valid for a in answers]
    lap("validation")
    table = pa.concat_tables(tables)
    clock[:] = [time.perf_counter(), cpu_seconds()]
    with BronzeWriter(lake) as writer:
        writer.write(table)
    lap("bronze range= files")
    with postgres.connect(db_url, autocommit=True) as conn:
        postgres.upsert_daily(conn, table)
    lap("raw_ohlcv upsert (postgres.upsert_daily, one connection)")
    return out


def section(
    args: argparse.Namespace,
    new: Measured,
    old: Measured,
    stages: dict[str, tuple[float, float]],
    first: dt.date,
    last: dt.date,
) -> str:
    speedup = new.rate / old.rate if old.rate else float("inf")
    busy = ""
    if max(LOADS, default=0) > (os.cpu_count() or 1):
        busy = " (above the core count: other jobs shared the machine, wall times are inflated)"
    stage_text = ""
    if stages:
        lines = "\n".join(
            f"| {name} | {sec:.1f} | {cpu:.1f} | {new.rows / sec if sec else 0:,.0f} |"
            for name, (sec, cpu) in stages.items()
        )
        stage_text = f"""
Where the time goes: each stage alone on the same {new.rows:,} rows, one after the other.
The flow overlaps them (fetch threads, validation, upserts on two connections in the
background, bronze at the end), so the slowest stage bounds the end-to-end rate. CPU is this
process's only: the simulator's and the Postgres server's are not counted, and under load the
wall times exceed the CPU times by the time spent waiting for a core.

| stage | seconds | CPU s (this process) | rows/s |
| --- | ---: | ---: | ---: |
{lines}
"""
    ok_rate = "met" if new.rate >= TARGET_ROWS_PER_S else "NOT met"
    ok_files = "met" if new.max_files <= 1 else "NOT met"
    return f"""## Daily ingestion (`python -m benchmarks.bench_ingest`)

Simulator in its own process, {args.symbols:,} symbols x {new.requests} sessions
({first} .. {last}); local lake; Postgres {"from DATABASE_URL" if os.environ.get("DATABASE_URL") else "embedded"};
{os.cpu_count()} cores. Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; one-minute load
average during the run {min(LOADS, default=0):.1f} .. {max(LOADS, default=0):.1f}{busy}.

| run | requests | rows | files | most files for a symbol | raw_ohlcv rows | seconds | CPU s (this process) | rows/s |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
| replay flow (grouped daily, range= files, binary COPY upserts) | {new.requests:,} | {new.rows:,} | {new.files:,} | {new.max_files} | {new.pg_rows:,} | {new.seconds:.1f} | {new.cpu:.1f} | {new.rate:,.0f} |
| old design (1 request, 1 file, 1 upsert per symbol-day), {args.baseline_symbols} symbols x {args.baseline_sessions} sessions | {old.requests:,} | {old.rows:,} | {old.files:,} | {old.max_files} | {old.pg_rows:,} | {old.seconds:.1f} | {old.cpu:.1f} | {old.rate:,.0f} |

Per row the replay flow is {speedup:,.0f} times faster than the old design. Targets: at least
{TARGET_ROWS_PER_S:,} rows/s end to end ({ok_rate}); at most one file per symbol per replay ({ok_files}).
At the old design's rate the full replay would take {new.rows / old.rate / 3600 if old.rate else 0:,.1f} hours
and write {args.symbols * new.requests:,} files.
{stage_text}"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_ingest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--symbols", type=int, default=5000, help="simulated symbols (5000)")
    p.add_argument("--sessions", type=int, default=252, help="sessions replayed (252)")
    p.add_argument("--last", type=dt.date.fromisoformat, default=dt.date(2024, 12, 31))
    p.add_argument("--baseline-symbols", type=int, default=50)
    p.add_argument("--baseline-sessions", type=int, default=10)
    p.add_argument("--no-stages", action="store_true", help="skip the per-stage breakdown")
    p.add_argument("--no-report", action="store_true", help="print only, leave BENCHMARKS.md")
    args = p.parse_args(argv)

    last = calendar.last_session_on_or_before(args.last)
    sessions = calendar.sessions_between(dt.date(1962, 1, 2), last)[-args.sessions :]
    first = sessions[0]
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        server_url = os.environ.get("DATABASE_URL")
        if not server_url:
            from core.embedded import postgres_url

            server_url = postgres_url(Path(tmp) / "pg", stop_at_exit=True)
        sim_args = [
            "--symbols",
            str(args.symbols),
            "--start",
            first.isoformat(),
            "--end",
            last.isoformat(),
        ]
        with SimulatorProcess(sim_args) as sim:
            print(
                f"simulator at {sim.rest_url}: {args.symbols} symbols, {first}..{last}", flush=True
            )
            lake_new = Lake(str(Path(tmp) / "lake-replay"))
            db_new = fresh_schema(server_url, "bench_ingest_replay")
            settings = settings_for(sim.rest_url, lake_new, db_new, first, last)
            sample_load()
            new = run_replay(settings, lake_new, db_new, sessions)
            sample_load()
            print(f"replay: {new}", flush=True)

            lake_old = Lake(str(Path(tmp) / "lake-baseline"))
            db_old = fresh_schema(server_url, "bench_ingest_baseline")
            gateway = PolygonGateway.from_settings(settings)
            listing = gateway.get_json(
                f"/v2/aggs/grouped/locale/us/market/stocks/{last.isoformat()}",
                {"adjusted": "false"},
            )
            symbols = sorted(r["T"] for r in listing.get("results") or [])[: args.baseline_symbols]
            old = run_baseline(
                gateway, lake_old, db_old, symbols, sessions[-args.baseline_sessions :]
            )
            print(f"baseline: {old}", flush=True)
            stages: dict[str, tuple[float, float]] = {}
            if not args.no_stages:
                stages = stage_breakdown(
                    gateway,
                    Lake(str(Path(tmp) / "lake-stages")),
                    fresh_schema(server_url, "bench_ingest_stages"),
                    sessions,
                    settings.replay_fetch_concurrency,
                )
                print(f"stages: {stages}", flush=True)
    sample_load()
    body = section(args, new, old, stages, first, last)
    print(body)
    if not args.no_report:
        report.write_section("ingest", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
