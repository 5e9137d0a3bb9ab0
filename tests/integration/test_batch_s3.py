"""Consolidate, resample and vacuum on S3 (the emulated endpoint): the same code as locally."""

from __future__ import annotations

import datetime as dt

import pyarrow.parquet as pq
import pytest

from batch import consolidate, resample, vacuum
from batch.engine import cleanup
from core import calendar, layout
from core.lake import Lake
from core.schemas import FIB_INTERVALS
from tests.batch_support import (
    Row,
    read_silver,
    reference_bars,
    reference_merge,
    sessions,
    simple_rows,
    snapshot,
    write_fragment,
)

pytestmark = pytest.mark.integration


def _silver(lake: Lake, interval: int) -> dict[tuple[int, int], list[tuple[object, ...]]]:
    out = {}
    for e in lake.list(layout.silver_dir(interval), suffix=".parquet"):
        stamp = e.key.rsplit("_", 1)[-1].removesuffix(".parquet")
        t = pq.read_table(lake.path(e.key), filesystem=lake.fs)
        out[(int(stamp[:4]), int(stamp[4:]))] = [tuple(r.values()) for r in t.to_pylist()]
    return out


def test_consolidate_resample_vacuum_on_s3(s3_lake: Lake, local_lake: Lake) -> None:
    i = calendar.session_index(dt.date(2024, 11, 1))
    days = sessions()[i : i + 45]
    rows: list[Row] = [
        *simple_rows("AAA", days),
        *simple_rows("BBB", days[5:30], base=40),
        *[Row("AAA", d, 5, 9, 4, 8, 10, "live", 50) for d in days[40:]],  # live loses to rest
    ]
    for lake in (s3_lake, local_lake):
        write_fragment(lake, [r for r in rows if r.symbol == "AAA" and r.source == "rest"][:40])
        write_fragment(lake, [r for r in rows if r.symbol == "BBB"])
        for r in rows:
            if r.symbol == "AAA" and (r.date >= days[40]):
                key = layout.daily_fragment(r.symbol, r.date)
                if r.source == "live":
                    key = layout.range_fragment(r.symbol, r.date, r.date)
                write_fragment(lake, [r], key)
        assert consolidate.run(lake, workers=1, cleanup=False).ok
        assert resample.run(lake, workers=1).ok
    history = reference_merge(rows)
    for n in FIB_INTERVALS:
        assert _silver(s3_lake, n) == reference_bars(history, n, "calendar"), f"{n}d"
        assert _silver(s3_lake, n) == read_silver(local_lake, n)
    silver_s3 = snapshot(s3_lake, "silver")
    assert silver_s3 == snapshot(local_lake, "silver")

    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    fragments = [e.key for e in s3_lake.list(layout.DAILY) if layout.parse_fragment(e.key)]
    dry = vacuum.run(s3_lake, workers=1, dry_run=True, now=later, retention_days=7)
    assert dry.fragments == len(fragments) and s3_lake.list(layout.DAILY)
    report = vacuum.run(s3_lake, workers=1, now=later, retention_days=7)
    assert report.ok and report.fragments == len(fragments)
    left = [e.key for e in s3_lake.list(layout.DAILY)]
    assert sorted(left) == [layout.consolidated("AAA"), layout.consolidated("BBB")]
    assert sorted(cleanup.read_manifest(s3_lake)["key"].to_pylist()) == sorted(fragments)
    # the lake still resamples to the same silver with its fragments gone
    assert resample.run(s3_lake, workers=1, full=True).ok
    assert snapshot(s3_lake, "silver") == silver_s3
