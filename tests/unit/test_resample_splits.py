"""batch.resample on split-adjusted rows: exact bars, only the split symbol rebuilt, incremental
equal to full, the split version recorded."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
from collections.abc import Sequence
from typing import Final

import pyarrow as pa
import pytest

from batch import consolidate, resample
from batch.engine import forking
from core import adjustments as adj
from core import calendar, layout
from core.lake import Lake
from core.schemas import FIB_INTERVALS, SPLITS
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

pytestmark = pytest.mark.unit
NOW = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
Splits = Sequence[tuple[str, dt.date, float, float]]


def _days(first: dt.date, count: int) -> list[dt.date]:
    i = calendar.session_index(first)
    return sessions()[i : i + count]


def _write_splits(lake: Lake, splits: Splits) -> None:
    lake.write_table(
        layout.reference_splits(),
        pa.table(
            {
                "symbol": [s[0] for s in splits],
                "execution_date": [s[1] for s in splits],
                "split_from": [s[2] for s in splits],
                "split_to": [s[3] for s in splits],
                "adjustment_type": [
                    "reverse_split" if s[2] > s[3] else "forward_split" for s in splits
                ],
                "vendor_factor": [None] * len(splits),
                "id": [None] * len(splits),
                "ingested_at": [NOW] * len(splits),
            },
            schema=SPLITS,
        ),
    )


def _adjusted(rows: Sequence[Row], splits: Splits) -> list[Row]:
    """The contract's S(d), written out independently of core.adjustments."""
    out = []
    for r in rows:
        mine = sorted((s for s in splits if s[0] == r.symbol and s[1] > r.date), key=lambda s: s[1])
        f = math.prod(s[2] / s[3] for s in mine)
        out.append(
            dataclasses.replace(
                r, open=r.open * f, high=r.high * f, low=r.low * f, close=r.close * f,
                volume=r.volume / f,
            )
        )  # fmt: skip
    return out


def _market() -> list[Row]:
    days = _days(dt.date(2024, 1, 2), 90)
    rows = simple_rows("AAA", days, base=400.0) + simple_rows("BBB", days, base=20.0)
    rows += simple_rows("CCC", days[10:], base=3.0)
    return rows


SPLIT_SET: Final = (
    ("AAA", dt.date(2024, 2, 15), 1.0, 4.0),
    ("AAA", dt.date(2024, 4, 10), 1.0, 3.0),
    ("CCC", dt.date(2024, 3, 1), 10.0, 1.0),
)


def _check(lake: Lake, rows: Sequence[Row], splits: Splits) -> None:
    history = reference_merge(_adjusted(rows, splits))
    for n in FIB_INTERVALS:
        assert read_silver(lake, n) == reference_bars(history, n, "calendar"), f"{n}d"


def _build(lake: Lake, rows: Sequence[Row], **kw: object) -> resample.ResampleReport:
    for symbol in sorted({r.symbol for r in rows}):
        write_fragment(lake, [r for r in rows if r.symbol == symbol])
    assert consolidate.run(lake, workers=1).ok
    report = resample.run(lake, workers=1, **kw)  # type: ignore[arg-type]
    assert report.ok
    return report


def test_bars_are_built_from_split_adjusted_rows(local_lake: Lake) -> None:
    rows = _market()
    _write_splits(local_lake, SPLIT_SET)
    _build(local_lake, rows)
    _check(local_lake, rows, SPLIT_SET)
    recorded = adj.read_recorded(local_lake)
    book = adj.split_book(local_lake)
    assert {s: v for s, (v, _) in recorded.items()} == {
        s: book.version(s) for s in ("AAA", "BBB", "CCC")
    }
    assert recorded["BBB"][0] == adj.NO_SPLITS


def test_a_new_split_rebuilds_that_symbol_only_and_equals_a_full_rebuild(
    local_lake: Lake, tmp_path_factory: pytest.TempPathFactory
) -> None:
    rows = _market()
    _write_splits(local_lake, SPLIT_SET[:1])
    _build(local_lake, rows)
    before = adj.read_recorded(local_lake)
    bbb_before = {k: [r for r in v if r[0] == "BBB"] for k, v in read_silver(local_lake, 8).items()}

    _write_splits(local_lake, SPLIT_SET)  # a second AAA split and a CCC reverse split arrive
    report = resample.run(local_lake, workers=1)
    assert report.ok
    assert {r.interval: r.symbols_changed for r in report.per_interval} == {
        n: 2 for n in FIB_INTERVALS
    }
    _check(local_lake, rows, SPLIT_SET)
    bbb_after = {k: [r for r in v if r[0] == "BBB"] for k, v in read_silver(local_lake, 8).items()}
    assert bbb_after == bbb_before
    after = adj.read_recorded(local_lake)
    assert after["BBB"] == before["BBB"]  # unchanged version, unchanged applied_at
    assert after["AAA"][0] != before["AAA"][0]

    full = Lake(tmp_path_factory.mktemp("full").as_uri())
    _write_splits(full, SPLIT_SET)
    _build(full, rows, full=True)
    assert snapshot(local_lake) == {k: v for k, v in snapshot(full).items()}


def test_a_withdrawn_split_restores_the_raw_bars(local_lake: Lake) -> None:
    rows = _market()
    _write_splits(local_lake, SPLIT_SET)
    _build(local_lake, rows)
    _write_splits(local_lake, SPLIT_SET[2:])
    assert resample.run(local_lake, workers=1).ok
    _check(local_lake, rows, SPLIT_SET[2:])
    assert adj.read_recorded(local_lake)["AAA"][0] == adj.NO_SPLITS


def test_a_run_without_splits_says_so(local_lake: Lake, caplog: pytest.LogCaptureFixture) -> None:
    rows = _market()
    with caplog.at_level("WARNING"):
        _build(local_lake, rows)
    assert "dataflows.corporate_actions" in caplog.text
    _check(local_lake, rows, ())


@pytest.mark.skipif(not forking.available(), reason="forked workers need Linux's fork")
def test_forked_and_compiled_runs_adjust_the_same(local_lake: Lake) -> None:
    rows = _market()
    _write_splits(local_lake, SPLIT_SET)
    _build(local_lake, rows, processes=True)
    _check(local_lake, rows, SPLIT_SET)


def _mtimes(lake: Lake) -> dict[str, int]:
    return {e.key: os.stat(lake.path(e.key)).st_mtime_ns for e in lake.list("silver")}


@pytest.mark.parametrize("forked", [False, True])
def test_a_new_split_rewrites_only_the_months_before_it(
    local_lake: Lake,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    forked: bool,
) -> None:
    if forked and not forking.available():
        pytest.skip("forked workers need Linux's fork")
    rows = _market()
    _write_splits(local_lake, SPLIT_SET[:1])
    _build(local_lake, rows)
    before = _mtimes(local_lake)
    split_day = dt.date(2024, 3, 1)
    splits = (*SPLIT_SET[:1], ("BBB", split_day, 1.0, 2.0))
    _write_splits(local_lake, splits)
    if forked:  # the intervals' month files rewritten on forked workers
        monkeypatch.setattr(resample, "FORK_MIN_MONTHS", 1)
    assert resample.run(local_lake, workers=2 if forked else 1).ok
    _check(local_lake, rows, splits)
    after = _mtimes(local_lake)
    later = [k for k in before if k.rsplit("_", 1)[-1] > "202403.parquet"]
    assert later and all(after[k] == before[k] for k in later)  # not even read and rewritten
    assert any(after[k] != before[k] for k in before if k not in later)

    full = Lake(tmp_path_factory.mktemp("full").as_uri())
    _write_splits(full, splits)
    _build(full, rows, full=True)
    assert snapshot(local_lake) == snapshot(full)


def test_a_split_and_a_backfill_together_equal_a_full_rebuild(
    local_lake: Lake, tmp_path_factory: pytest.TempPathFactory
) -> None:
    rows = _market()
    _build(local_lake, rows)
    fixed = [dataclasses.replace(r, close=r.close + 0.5, ingested=10) for r in rows[60:62]]
    write_fragment(local_lake, fixed)  # AAA rows after the split are corrected
    assert consolidate.run(local_lake, workers=1).ok
    _write_splits(local_lake, SPLIT_SET[:1])
    assert resample.run(local_lake, workers=1).ok
    merged = [*rows[:60], *fixed, *rows[62:]]
    _check(local_lake, merged, SPLIT_SET[:1])

    full = Lake(tmp_path_factory.mktemp("full").as_uri())
    _write_splits(full, SPLIT_SET[:1])
    _build(full, merged, full=True)
    assert snapshot(local_lake) == snapshot(full)


def test_marks_without_their_splits_rebuild_the_symbol_whole(local_lake: Lake) -> None:
    rows = _market()
    _write_splits(local_lake, SPLIT_SET[:1])
    _build(local_lake, rows)
    for n in FIB_INTERVALS:  # as written before marks kept their splits
        raw = local_lake.read_json(layout.silver_checkpoint(n))
        assert raw is not None
        raw["symbols"] = {s: m[:6] for s, m in raw["symbols"].items()}
        local_lake.write_json(layout.silver_checkpoint(n), raw)
    _write_splits(local_lake, SPLIT_SET)
    assert resample.run(local_lake, workers=1).ok
    _check(local_lake, rows, SPLIT_SET)
