"""batch.retention on a real PostgreSQL: exact moves, idempotence, batches, crash and rerun."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from typing import Any

import psycopg
import pytest

from batch import retention
from core import calendar
from core.sharding import Shard
from core.stores import postgres
from tests.batch_support import Row, simple_rows, table_of

pytestmark = pytest.mark.integration

CUTOFF = dt.date(2020, 1, 2)
SYMBOLS = ("AAA", "BBB", "CCC")
Key = tuple[str, dt.date]


def _seed(
    url: str, first: dt.date = dt.date(2019, 11, 1), last: dt.date = dt.date(2020, 2, 28)
) -> list[Row]:
    days = calendar.sessions_between(first, last)
    rows = [r for s in SYMBOLS for r in simple_rows(s, days)]
    with postgres.connect(url) as conn:
        postgres.migrate(conn)
        postgres.upsert_daily(conn, table_of(rows))
    return rows


def _state(url: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    cols = ", ".join(postgres.DAILY_COLUMNS)
    with postgres.connect(url) as conn:
        live = conn.execute(f"SELECT {cols} FROM raw_ohlcv ORDER BY symbol, date").fetchall()
        arch = conn.execute(
            f"SELECT {cols} FROM raw_ohlcv_archive ORDER BY symbol, date"
        ).fetchall()
    return live, arch


def _keys(rows: list[tuple[Any, ...]]) -> set[Key]:
    return {(r[0], r[1]) for r in rows}


def _expected(rows: list[Row]) -> tuple[set[Key], set[Key]]:
    keys = {(r.symbol, r.date) for r in rows}
    old = {k for k in keys if k[1] < CUTOFF}
    return keys - old, old


def test_moves_exactly_the_old_rows_and_is_idempotent(pg_url: str) -> None:
    rows = _seed(pg_url)
    keep, old = _expected(rows)
    report = retention.run(pg_url, cutoff=CUTOFF)
    assert report.ok
    assert (report.candidates, report.archived, report.deleted) == (len(old), len(old), len(old))
    live, arch = _state(pg_url)
    assert _keys(live) == keep
    assert _keys(arch) == old
    again = retention.run(pg_url, cutoff=CUTOFF)
    assert (again.candidates, again.archived, again.deleted, again.batches) == (0, 0, 0, 0)
    assert _state(pg_url) == (live, arch)
    with postgres.connect(pg_url) as conn:
        log = conn.execute(
            "SELECT status, archived, deleted, dry_run FROM retention_log ORDER BY id"
        ).fetchall()
    assert log == [("succeeded", len(old), len(old), False), ("succeeded", 0, 0, False)]


def test_rows_already_archived_are_still_removed_and_archive_kept(pg_url: str) -> None:
    rows = _seed(pg_url)
    keep, old = _expected(rows)
    with postgres.connect(pg_url) as conn:  # an earlier run archived AAA's old rows, then died
        conn.execute(
            "INSERT INTO raw_ohlcv_archive (symbol, date, open, high, low, close, volume, vwap,"
            " transactions, source, ingested_at) SELECT symbol, date, open + 1000, high, low,"
            " close, volume, vwap, transactions, source, ingested_at FROM raw_ohlcv"
            " WHERE symbol = 'AAA' AND date < %s",
            (CUTOFF,),
        )
    aaa_old = sum(1 for k in old if k[0] == "AAA")
    report = retention.run(pg_url, cutoff=CUTOFF, batch_size=7)
    assert report.already_archived == aaa_old
    assert report.deleted == len(old)
    assert report.archived == len(old) - aaa_old
    live, arch = _state(pg_url)
    assert _keys(live) == keep
    assert _keys(arch) == old
    assert all(r[2] >= 1000 for r in arch if r[0] == "AAA")  # the first archived copy stays


def test_a_newer_row_replaces_its_older_archived_copy(pg_url: str) -> None:
    day = calendar.sessions_between(dt.date(2019, 12, 2), dt.date(2019, 12, 2))[0]
    with postgres.connect(pg_url) as conn:
        postgres.migrate(conn)
        postgres.upsert_daily(conn, table_of([Row("NEW", day, 20, 21, 19, 20, 5, ingested=500)]))
        conn.execute(  # an older copy archived long ago
            "INSERT INTO raw_ohlcv_archive (symbol, date, open, high, low, close, volume, source,"
            " ingested_at) VALUES ('NEW', %s, 15, 16, 14, 15, 5, 'rest', %s)",
            (day, dt.datetime(2019, 12, 3, tzinfo=dt.UTC)),
        )
    assert retention.run(pg_url, cutoff=CUTOFF).ok
    live, arch = _state(pg_url)
    assert not live and [r[5] for r in arch] == [20.0]  # the newer close, not the archived one


def test_dry_run_changes_nothing(pg_url: str) -> None:
    rows = _seed(pg_url)
    _, old = _expected(rows)
    before = _state(pg_url)
    report = retention.run(pg_url, cutoff=CUTOFF, dry_run=True)
    assert (report.candidates, report.archived, report.deleted) == (len(old), 0, 0)
    assert report.dry_run and report.ok
    assert _state(pg_url) == before


def test_small_batches_and_symbol_scope(pg_url: str) -> None:
    rows = _seed(pg_url)
    keep, old = _expected(rows)
    seen: list[int] = []
    report = retention.run(
        pg_url, cutoff=CUTOFF, batch_size=10, symbols=["BBB"], on_batch=seen.append
    )
    bbb = {k for k in old if k[0] == "BBB"}
    assert report.deleted == len(bbb) == sum(seen)
    assert report.batches == len(seen) == -(-len(bbb) // 10)
    assert max(seen) <= 10
    live, arch = _state(pg_url)
    assert _keys(arch) == bbb
    assert _keys(live) == keep | (old - bbb)


def test_failure_between_batches_then_rerun_ends_identical(
    pg_url: str, postgres_server_url: str
) -> None:
    rows = _seed(pg_url)
    keep, old = _expected(rows)

    def boom(_: int, calls: list[int] = []) -> None:  # noqa: B006
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("injected crash")

    with pytest.raises(RuntimeError, match="injected"):
        retention.run(pg_url, cutoff=CUTOFF, batch_size=5, on_batch=boom)
    live, arch = _state(pg_url)
    assert len(arch) == 15 and _keys(live) | _keys(arch) == keep | old
    assert not _keys(live) & _keys(arch)
    retention.run(pg_url, cutoff=CUTOFF, batch_size=5)
    live, arch = _state(pg_url)
    assert (_keys(live), _keys(arch)) == (keep, old)
    with postgres.connect(pg_url) as conn:
        statuses = [r[0] for r in conn.execute("SELECT status FROM retention_log ORDER BY id")]
    assert statuses == ["failed", "succeeded"]


def test_sigkill_mid_run_then_rerun_ends_identical(pg_url: str) -> None:
    rows = _seed(pg_url, first=dt.date(2018, 1, 2))
    keep, old = _expected(rows)
    env = {**os.environ, "DATABASE_URL": pg_url}
    cmd = [sys.executable, "-m", "batch.retention", "--as-of", "2025-01-01",
           "--keep-days", str((dt.date(2025, 1, 1) - CUTOFF).days), "--batch-size", "2"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    killed = False
    with psycopg.connect(pg_url, autocommit=True) as conn:
        while time.monotonic() < deadline and proc.poll() is None:
            row = (
                conn.execute(
                    "SELECT coalesce(max(batches), 0) FROM retention_log WHERE NOT dry_run"
                ).fetchone()
                if _has_log(conn)
                else (0,)
            )
            if row and row[0] >= 20:
                proc.send_signal(signal.SIGKILL)
                killed = True
                break
            time.sleep(0.01)
    proc.wait(30)
    err = proc.stderr.read().decode() if proc.stderr else ""
    assert killed, f"retention ended before the kill: {err}"
    live, arch = _state(pg_url)
    assert 0 < len(arch) < len(old)
    assert _keys(live) | _keys(arch) == keep | old and not _keys(live) & _keys(arch)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "deleted" in done.stdout
    live, arch = _state(pg_url)
    assert (_keys(live), _keys(arch)) == (keep, old)
    reference = {(r.symbol, r.date): r.close for r in rows}
    assert all(reference[(r[0], r[1])] == r[5] for r in live + arch)
    with postgres.connect(pg_url) as conn:  # the killed run's log row is closed, not 'running'
        statuses = [r[0] for r in conn.execute("SELECT status FROM retention_log ORDER BY id")]
    assert statuses[-1] == "succeeded" and "running" not in statuses


def _has_log(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT to_regclass('retention_log') IS NOT NULL").fetchone()
    return bool(row and row[0])


def test_cli_dry_run_and_errors(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _seed(pg_url)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert retention.main(["--dry-run", "--no-progress"]) == 1  # no database: a clear failure
    monkeypatch.setenv("DATABASE_URL", pg_url)
    before = _state(pg_url)
    assert retention.main(["--dry-run", "--as-of", "2025-01-01", "--keep-days", "1826"]) == 0
    assert "would move" in capsys.readouterr().out
    assert _state(pg_url) == before
    with postgres.connect(pg_url) as conn:
        jobs = conn.execute("SELECT job, status FROM batch_jobs").fetchall()
    assert jobs == [("retention", "succeeded")]


@pytest.mark.unit
def test_cutoff_is_new_york_calendar() -> None:
    late_utc = dt.datetime(2025, 3, 10, 2, 30, tzinfo=dt.UTC)  # still 9 March in New York
    assert retention.today_new_york(late_utc) == dt.date(2025, 3, 9)
    assert retention.cutoff_for(dt.date(2025, 3, 9), 10) == dt.date(2025, 2, 27)
    with pytest.raises(retention.RetentionError):
        retention.cutoff_for(dt.date(2025, 3, 9), 0)


def test_only_real_whole_runs_count_for_the_weekly_schedule(pg_url: str) -> None:
    _seed(pg_url)
    assert retention.run(pg_url, cutoff=CUTOFF, dry_run=True).ok
    assert retention.run(pg_url, cutoff=CUTOFF, symbols=["AAA"]).ok
    assert retention.run(pg_url, cutoff=CUTOFF, shard=Shard(0, 2)).ok
    assert retention.last_success(pg_url) is None  # so the pipeline's weekly run still happens
    assert retention.run(pg_url, cutoff=CUTOFF).ok
    assert retention.last_success(pg_url) is not None
