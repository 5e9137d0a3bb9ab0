"""Crash safety: SIGKILL consolidate, resample and vacuum at random points, rerun, compare.

Two copies of one bronze lake (copied with their modification times, so fragment identities
match): one is processed by uninterrupted in-process runs, the other by subprocesses killed at
seeded random moments over the span an uninterrupted run takes, then run to completion. After
each round the data.parquet rows, the manifest's meaning (versions, change history, fragments
merged), silver (byte for byte) and what vacuum removed must be the same.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from batch import consolidate, resample, vacuum
from batch.engine import cleanup
from batch.engine import manifest as mf
from core import calendar, layout
from core.lake import Lake
from tests.batch_support import Row, sessions, simple_rows, snapshot, write_fragment

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KILLS_PER_JOB = 2
SYMBOLS = 40


def _job(name: str, lake: Lake, *extra: str) -> list[str]:
    return [sys.executable, "-m", f"batch.{name}", "--lake", lake.url, "--no-progress", *extra]


def _timed(cmd: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=_env())
    return time.perf_counter() - started


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DATABASE_URL", None)
    return env


def _kill_then_finish(cmd: list[str], span: float, rng: random.Random) -> int:
    """Start and SIGKILL ``cmd`` KILLS_PER_JOB times at random moments, then run it through."""
    killed = 0
    for _ in range(KILLS_PER_JOB):
        proc = subprocess.Popen(
            cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            proc.wait(timeout=rng.uniform(0.3, 1.0) * span)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed += 1
    subprocess.run(cmd, check=True, capture_output=True, env=_env())
    return killed


def _rows(lake: Lake) -> dict[str, list[tuple[object, ...]]]:
    out = {}
    for e in lake.list(layout.DAILY, suffix="/data.parquet"):
        t = pq.read_table(lake.path(e.key))
        out[e.key] = [tuple(r.values()) for r in t.to_pylist()]
    return out


def _meaning(lake: Lake) -> dict[str, mf.SymbolState]:
    """The manifest without what depends on the clock or the run (revision, sizes, stamps)."""
    return {
        s: dataclasses.replace(st, revision=0, data_size=None, changed_at=None)
        for s, st in mf.read(lake).items()
    }


def _fragments(lake: Lake) -> list[str]:
    return sorted(e.key for e in lake.list(layout.DAILY) if layout.parse_fragment(e.key))


def test_killed_jobs_rerun_to_the_uninterrupted_result(tmp_path: Path) -> None:
    rng = random.Random(20240607)
    i = calendar.session_index(dt.date(2023, 10, 2))
    days = sessions()[i : i + 90]
    staging = Lake(str(tmp_path / "staging"))
    bronze = Path(staging.root) / layout.DAILY
    names = [f"S{k:02d}" for k in range(SYMBOLS)]
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    killed = 0
    ref, hit = Lake(str(tmp_path / "ref")), Lake(str(tmp_path / "hit"))
    rounds: list[list[list[Row]]] = [
        # 1: histories with a hole at days[20]
        [[r for r in simple_rows(s, days[:80], base=k) if r.date != days[20]] for k, s in
         enumerate(names)],
        # 2: new sessions (date=) and the backfilled hole, newer versions of some old dates
        [[r] for k, s in enumerate(names) for r in simple_rows(s, days[80:], base=k)]
        + [[r] for k, s in enumerate(names) for r in simple_rows(s, days[:80], base=k)
           if r.date == days[20]]
        + [simple_rows(s, days[30:33], base=k + 100, ingested=9) for k, s in enumerate(names)
           if k % 3 == 0],
    ]  # fmt: skip
    for n, fragments in enumerate(rounds):
        for f in fragments:
            key = None
            if n and len(f) == 1 and f[0].date == days[20]:
                key = layout.daily_fragment(f[0].symbol, f[0].date)
            write_fragment(staging, f, key)
        for lake in (ref, hit):  # copy2 keeps mtimes: the fragments' identities match
            shutil.copytree(bronze, Path(lake.root) / layout.DAILY, dirs_exist_ok=True)
        # the reference: uninterrupted, in process
        assert consolidate.run(ref, workers=1, cleanup=False).ok
        assert resample.run(ref, workers=1).ok
        assert vacuum.run(ref, workers=1, now=later, retention_days=7).ok
        # the same jobs killed at random moments, then run through
        cons = _job("consolidate", hit, "--workers", "1", "--no-cleanup")
        killed += _kill_then_finish(cons, _timed(_job("consolidate", staging, "--dry-run")), rng)
        res = _job("resample", hit, "--processes" if n else "--no-processes")
        span = _timed(_job("resample", hit, "--dry-run"))
        killed += _kill_then_finish(res, span, rng)
        assert vacuum.run(hit, workers=1, now=later, retention_days=7, dry_run=True).ok
        vac = _job("vacuum", hit, "--retention-days", "0")
        killed += _kill_then_finish(vac, _timed(_job("vacuum", hit, "--dry-run")), rng)
        assert vacuum.run(hit, workers=1, now=later, retention_days=7).ok

        assert _rows(hit) == _rows(ref), f"round {n}: data.parquet differs"
        assert _meaning(hit) == _meaning(ref), f"round {n}: manifest differs"
        assert snapshot(hit, "silver") == snapshot(ref, "silver"), f"round {n}: silver differs"
        removed = sorted(cleanup.read_manifest(hit)["key"].to_pylist())
        assert removed == sorted(cleanup.read_manifest(ref)["key"].to_pylist())
        assert _fragments(hit) == _fragments(ref)
        assert not hit.list(resample.STAGING)
        # copies of bronze for the next round must not bring removed fragments back
        for key in removed:
            (Path(staging.root) / key).unlink(missing_ok=True)
    assert killed >= 3, f"only {killed} runs were killed mid-way; the spans are too short"
