"""batch.export: Postgres -> bronze, consolidated equal to the database, resumable, retried."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pytest
from psycopg import sql

from batch import consolidate, export
from batch.engine import retry
from core import calendar, layout
from core.lake import Lake
from core.sharding import Shard
from core.stores import postgres
from tests.batch_support import T0, Row, simple_rows, table_of, write_fragment

pytestmark = pytest.mark.integration

FAST = export.Options(workers=2, chunk=2, page_size=7, backoff=retry.Backoff(base_s=0.0))
DAYS = calendar.sessions_between(dt.date(2024, 10, 1), dt.date(2024, 12, 31))
Key = tuple[str, dt.date]


def _insert(conn: psycopg.Connection[Any], table: str, rows: list[Row]) -> None:
    stmt = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        sql.Identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, postgres.DAILY_COLUMNS)),
        sql.SQL(", ").join([sql.Placeholder()] * len(postgres.DAILY_COLUMNS)),
    )
    with conn.cursor() as cur:
        cur.executemany(
            stmt,
            [
                (r.symbol, r.date, r.open, r.high, r.low, r.close, r.volume, r.vwap,
                 r.transactions, r.source, T0 + dt.timedelta(seconds=r.ingested))
                for r in rows
            ],
        )  # fmt: skip


def _seed(url: str) -> dict[Key, Row]:
    """Six symbols over raw and archive, with keys in both tables; returns the expected winners."""
    recent, old = DAYS[30:], DAYS[:30]
    raw = [
        *simple_rows("AAA", recent, ingested=100, vwap=1.5, transactions=7),
        *simple_rows("BBB", recent, ingested=100),
        Row("CCC", DAYS[5], 5, 6, 4, 5.5, 10, ingested=100),  # a single session
        *simple_rows("DDD", DAYS[50:], source="live", ingested=100),
        *simple_rows("EEE", recent[:3], ingested=100),
    ]
    archive = [
        *simple_rows("AAA", old, ingested=10),
        *simple_rows("BBB", DAYS[:35], base=50.0, ingested=5),  # 5 keys also in raw, older
        *simple_rows("EEE", recent[:3], base=70.0, ingested=500),  # in both, archive newer
        *simple_rows("FFF", DAYS[:20], ingested=10),  # delisted: archive only
    ]
    with postgres.connect(url) as conn:
        postgres.migrate(conn)
        _insert(conn, "raw_ohlcv", raw)
        _insert(conn, "raw_ohlcv_archive", archive)
    expected: dict[Key, Row] = {}
    for r in archive:
        expected[(r.symbol, r.date)] = r
    for r in raw:
        k = (r.symbol, r.date)
        if k not in expected or r.ingested >= expected[k].ingested:
            expected[k] = r
    return expected


def _as_lake_row(r: Row) -> tuple[Any, ...]:
    source = "live" if r.source == "live" else "export"
    return (r.symbol, r.date, r.open, r.high, r.low, r.close, r.volume, r.vwap,
            r.transactions, source, T0 + dt.timedelta(seconds=r.ingested))  # fmt: skip


def _consolidated(lake: Lake) -> dict[Key, tuple[Any, ...]]:
    out = {}
    for e in lake.list(layout.DAILY, suffix="data.parquet"):
        for row in consolidate.read_data(lake, e.key).to_pylist():
            out[(row["symbol"], row["date"])] = tuple(row.values())
    return out


def _fragments(lake: Lake) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for e in lake.list(layout.DAILY, suffix=".parquet"):
        parsed = layout.parse_fragment(e.key)
        if parsed is not None:
            out[parsed[0]].append(e.key)
    return dict(out)


def test_export_then_consolidate_equals_the_database(pg_url: str, local_lake: Lake) -> None:
    expected = _seed(pg_url)
    report = export.run(pg_url, local_lake, options=FAST)
    assert report.ok and report.complete, report.failed
    assert (report.symbols, report.exported, report.rows) == (6, 6, len(expected))
    frags = _fragments(local_lake)
    assert {s: len(k) for s, k in frags.items()} == dict.fromkeys(
        ["AAA", "BBB", "CCC", "DDD", "EEE", "FFF"], 1
    )
    assert frags["CCC"] == [layout.daily_fragment("CCC", DAYS[5])]
    assert frags["AAA"] == [layout.range_fragment("AAA", DAYS[0], DAYS[-1])]
    assert consolidate.run(local_lake, workers=1, cleanup=False).ok
    assert _consolidated(local_lake) == {k: _as_lake_row(r) for k, r in expected.items()}
    checkpoint = local_lake.read_json(export.checkpoint_key(Shard()))
    assert checkpoint["done"] and checkpoint["last_symbol"] == "FFF"
    again = export.run(pg_url, local_lake, options=FAST)  # complete: nothing left to do
    assert (again.skipped, again.exported) == (6, 0)


def test_export_rows_lose_to_newer_rest_rows_in_the_lake(pg_url: str, local_lake: Lake) -> None:
    expected = _seed(pg_url)
    newer = Row("AAA", DAYS[40], 1, 2, 0.5, 1.5, 9, ingested=200)  # DB's AAA rows: 100
    older = Row("BBB", DAYS[40], 1, 2, 0.5, 1.5, 9, ingested=50)
    tie = Row("EEE", DAYS[31], 1, 2, 0.5, 1.5, 9, ingested=500)  # same ingested_at as DB
    for r in (newer, older, tie):
        write_fragment(local_lake, [r])
    # the fragment AAA's export would write already exists (say a backfill): merged, not lost
    mine = Row("AAA", DAYS[0], 3, 4, 2, 3.5, 9, ingested=900)
    write_fragment(local_lake, [mine], layout.range_fragment("AAA", DAYS[0], DAYS[-1]))
    report = export.run(pg_url, local_lake, options=FAST)
    assert report.ok and report.merged_existing == 1
    assert consolidate.run(local_lake, workers=1, cleanup=False).ok
    got = _consolidated(local_lake)
    assert got[("AAA", DAYS[40])][9] == "rest"
    assert got[("BBB", DAYS[40])] == _as_lake_row(expected[("BBB", DAYS[40])])
    assert got[("EEE", DAYS[31])][9] == "rest"
    assert got[("AAA", DAYS[0])][5] == 3.5 and got[("AAA", DAYS[0])][9] == "rest"


class FaultyLake(Lake):
    """A real local lake whose writes fail for chosen symbols: ``fails`` times, or always."""

    def __init__(self, url: str, fails: dict[str, int]) -> None:
        super().__init__(url)
        self.fails = fails
        self.writes: list[str] = []

    def write_table(self, key: str, table: pa.Table, **kwargs: Any) -> int:
        symbol = key.split("symbol=")[1].split("/")[0]
        left = self.fails.get(symbol, 0)
        if left:
            self.fails[symbol] = left - 1
            raise OSError(f"injected write failure for {symbol}")
        self.writes.append(symbol)
        return super().write_table(key, table, **kwargs)


def test_interrupted_export_resumes_without_duplicates(pg_url: str, local_lake: Lake) -> None:
    expected = _seed(pg_url)
    opts = export.Options(workers=1, chunk=2, page_size=7, backoff=retry.Backoff(2, 0.0))
    broken = FaultyLake(local_lake.url, {"DDD": 99})  # DDD fails every attempt
    first = export.run(pg_url, broken, options=opts)
    assert not first.ok and set(first.failed) == {"DDD"} and not first.complete
    assert broken.writes == ["AAA", "BBB", "CCC"]  # the chunk of DDD stops the run
    checkpoint = local_lake.read_json(export.checkpoint_key(Shard()))
    assert checkpoint["last_symbol"] == "CCC" and not checkpoint["done"]
    # a run of a few symbols in between keeps its own checkpoint
    assert export.run(pg_url, local_lake, symbols=["EEE"], options=opts).ok
    assert local_lake.read_json(export.checkpoint_key(Shard())) == checkpoint
    assert local_lake.read_json(export.checkpoint_key(Shard(), ["EEE"]))["done"]
    healed = FaultyLake(local_lake.url, {})
    second = export.run(pg_url, healed, options=opts)
    assert second.ok and second.complete and second.resumed_after == "CCC"
    assert healed.writes == ["DDD", "FFF"]  # EEE's fragment is there already, identical
    assert all(len(k) == 1 for k in _fragments(local_lake).values())
    assert consolidate.run(local_lake, workers=1, cleanup=False).ok
    assert _consolidated(local_lake) == {k: _as_lake_row(r) for k, r in expected.items()}


def test_transient_lake_and_database_errors_are_retried(pg_url: str, local_lake: Lake) -> None:
    expected = _seed(pg_url)
    flaky = FaultyLake(local_lake.url, {"BBB": 2, "FFF": 1})
    killed: list[int] = []

    def kill_connections(chunk: object) -> None:
        if not killed:
            with psycopg.connect(pg_url, autocommit=True) as conn:
                rows = conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = 'condvest-export'"
                ).fetchall()
            killed.append(len(rows))

    report = export.run(pg_url, flaky, options=FAST, on_chunk=kill_connections)
    assert report.ok, report.failed
    assert killed and killed[0] >= 1
    assert sorted(flaky.writes) == ["AAA", "BBB", "CCC", "DDD", "EEE", "FFF"]
    assert report.rows == len(expected)


def test_shards_together_export_everything_once(
    pg_url: str, local_lake: Lake, tmp_path: Any
) -> None:
    _seed(pg_url)
    whole = Lake((tmp_path / "whole").as_uri())
    export.run(pg_url, whole, options=FAST)
    for i in range(2):
        assert export.run(pg_url, local_lake, shard=Shard(i, 2), options=FAST).complete
    keys = {e.key for e in local_lake.list(layout.DAILY)}
    assert keys == {e.key for e in whole.list(layout.DAILY)}
    assert local_lake.exists(export.checkpoint_key(Shard(1, 2)))


def test_dry_run_and_cli(
    pg_url: str,
    local_lake: Lake,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    expected = _seed(pg_url)
    report = export.run(pg_url, local_lake, options=export.Options(dry_run=True))
    assert report.rows == len(expected) and report.files == 0
    assert local_lake.list("") == []
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert export.main(["--lake", local_lake.url]) == 1
    monkeypatch.setenv("DATABASE_URL", pg_url)
    assert export.main(["--lake", local_lake.url, "--symbols", "AAA,FFF", "--no-progress"]) == 0
    assert "exported 2 symbols" in capsys.readouterr().out
    assert set(_fragments(local_lake)) == {"AAA", "FFF"}


def test_export_to_s3(pg_url: str, s3_lake: Lake) -> None:
    expected = _seed(pg_url)
    assert export.run(pg_url, s3_lake, options=FAST).ok
    assert s3_lake.read_json(export.checkpoint_key(Shard()))["done"]
    assert consolidate.run(s3_lake, workers=1, cleanup=False).ok
    assert _consolidated(s3_lake) == {k: _as_lake_row(r) for k, r in expected.items()}


@pytest.mark.unit
def test_the_row_exported_for_a_key_follows_the_lakes_rule() -> None:
    day = dt.date(2024, 1, 2)
    t = T0

    def row(source: str, seconds: int, close: float) -> tuple[Any, ...]:
        return ("X", day, 1.0, 2.0, 0.5, close, 1.0, None, None, source,
                t + dt.timedelta(seconds=seconds))  # fmt: skip

    def close(*rows: tuple[Any, ...]) -> tuple[float, str]:
        kept = export.exported(export.to_bronze(rows)).to_pylist()
        assert len(kept) == 1
        return kept[0]["close"], kept[0]["source"]

    assert close(row("rest", 1, 1.0), row("rest", 2, 2.0)) == (2.0, "export")  # newer wins
    assert close(row("live", 9, 1.0), row("rest", 1, 2.0)) == (2.0, "export")  # never live
    assert close(row("live", 9, 1.0), row("export", 1, 2.0)) == (1.0, "live")
    assert close(row("export", 1, 1.0), row("rest", 1, 2.0)) == (2.0, "export")  # rank on ties
    assert close(row("export", 1, 1.0), row("rest", 1, 0.5)) == (0.5, "export")
    assert close(row("weird", 1, 1.0)) == (1.0, "export")
    bronze = export.exported(export.to_bronze([row("rest", 1, 1.0)]))
    assert table_of([]).schema == bronze.schema
    assert export.pending(["C", "A", "B"], "A") == ["B", "C"]


def test_sigkill_mid_run_then_rerun_equals_an_uninterrupted_export(
    pg_url: str, local_lake: Lake, tmp_path: Any
) -> None:
    rows = [r for i in range(150) for r in simple_rows(f"S{i:03d}", DAYS[:20], ingested=i)]
    with postgres.connect(pg_url) as conn:
        postgres.migrate(conn)
        _insert(conn, "raw_ohlcv", rows)
    reference = Lake((tmp_path / "reference").as_uri())
    assert export.run(pg_url, reference, options=FAST).complete
    env = {**os.environ, "DATABASE_URL": pg_url}
    env.pop("BATCH_COUNTS_FILE", None)
    cmd = [sys.executable, "-m", "batch.export", "--lake", local_lake.url, "--chunk", "1",
           "--workers", "1", "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoint = Path(local_lake.path(export.checkpoint_key(Shard())))
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline and not checkpoint.exists():
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, "the export ended before it could be killed"
    state = local_lake.read_json(export.checkpoint_key(Shard()))
    assert state is not None and not state["done"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resumed after {state['last_symbol']}" in done.stdout
    got = {e.key for e in local_lake.list(layout.DAILY)}
    assert got == {e.key for e in reference.list(layout.DAILY)}
    for key in got:
        assert local_lake.read_table(key).equals(reference.read_table(key)), key


def test_a_database_of_the_old_design_exports(pg_url: str, local_lake: Lake) -> None:
    """DECIMAL(10,2) prices, no vwap/transactions/source/ingested_at, no archive table."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE raw_ohlcv (symbol varchar(10), date date, open numeric(10,2),"
            " high numeric(10,2), low numeric(10,2), close numeric(10,2), volume bigint,"
            " PRIMARY KEY (symbol, date))"
        )
        for i, d in enumerate(DAYS[:5]):
            conn.execute(
                "INSERT INTO raw_ohlcv VALUES ('OLD', %s, 10.5, 11.25, 9.75, 10.99, %s)",
                (d, 1000 + i),
            )
    write_fragment(local_lake, [Row("OLD", DAYS[2], 1, 2, 0.5, 1.5, 9, ingested=0)])  # newer
    report = export.run(pg_url, local_lake, options=FAST)
    assert report.ok and report.rows == 5
    assert consolidate.run(local_lake, workers=1, cleanup=False).ok
    got = _consolidated(local_lake)
    assert got[("OLD", DAYS[2])][5] == 1.5 and got[("OLD", DAYS[2])][9] == "rest"
    assert got[("OLD", DAYS[0])] == (
        "OLD", DAYS[0], 10.5, 11.25, 9.75, 10.99, 1000.0, None, None, "export",
        export.LEGACY_INGESTED_AT,
    )  # fmt: skip


def test_no_tables_is_a_clear_error(pg_url: str, local_lake: Lake) -> None:
    with pytest.raises(export.ExportError, match="none of raw_ohlcv"):
        export.run(pg_url, local_lake, options=FAST)


def test_invalid_copies_are_quarantined_without_hiding_valid_ones(
    pg_url: str, local_lake: Lake
) -> None:
    day = DAYS[3]
    with postgres.connect(pg_url) as conn:
        postgres.migrate(conn)
        # the newest copy is invalid (negative open); the older archived copy is fine
        _insert(conn, "raw_ohlcv", [Row("WIN", day, -1, 6, 4, 5, 10, ingested=900)])
        _insert(conn, "raw_ohlcv_archive", [Row("WIN", day, 5, 6, 4, 5.5, 10, ingested=1)])
        # a legacy name that is no ticker: quarantined inside the lake, never a path
        _insert(conn, "raw_ohlcv", [Row("X/../../escapee", day, 5, 6, 4, 5, 10)])
    report = export.run(pg_url, local_lake, options=FAST)
    assert report.quarantined == 2
    assert consolidate.run(local_lake, workers=1, cleanup=False).ok
    assert _consolidated(local_lake)[("WIN", day)][5] == 5.5  # close
    parts = [e.key for e in local_lake.list("quarantine")]
    assert len(parts) == 2 and all(k.startswith(f"quarantine/export/{day}/part-") for k in parts)
    assert all(k.count("/") == 3 for k in parts)
    root = Path(local_lake.root)
    assert not list(root.parent.glob("escapee*")) and not list(root.glob("escapee*"))
