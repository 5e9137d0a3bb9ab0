"""batch.resample: exact Fibonacci semantics, incremental == full byte for byte, shards, anchors."""

from __future__ import annotations

import datetime as dt
import itertools
import random
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batch import consolidate, resample
from batch.engine import fib, forking
from batch.resample import AnchorMismatch
from core import layout
from core.lake import Lake
from core.schemas import FIB_INTERVALS, SILVER
from core.sharding import Shard
from tests.batch_support import (
    Row,
    read_silver,
    reference_bars,
    reference_merge,
    sessions,
    simple_rows,
    snapshot,
    table_of,
    window,
    write_fragment,
)

pytestmark = pytest.mark.unit


def _consolidate_and_resample(lake: Lake, anchor: fib.Anchor = "calendar", **kw: object) -> None:
    assert consolidate.run(lake, workers=1).ok
    assert resample.run(lake, anchor=anchor, workers=1, **kw).ok  # type: ignore[arg-type]


def _assert_matches_reference(lake: Lake, rows: Sequence[Row], anchor: str) -> None:
    history = reference_merge(rows)
    for n in FIB_INTERVALS:
        assert read_silver(lake, n) == reference_bars(history, n, anchor), f"{n}d differs"


@pytest.mark.parametrize("anchor", ["calendar", "symbol"])
def test_bars_match_the_reference_on_gaps_halts_listings_and_delistings(
    local_lake: Lake, anchor: fib.Anchor
) -> None:
    days = window(dt.date(2024, 11, 20), 70)  # crosses a year end and several holidays
    rows = [
        *simple_rows("AAA", days),  # full history
        *simple_rows("BBB", days[10:25] + days[31:50]),  # halted for six sessions, then delisted
        *simple_rows("CCC", days[60:]),  # new listing near the end
        *simple_rows("DDD", days[::3]),  # sparse trading
    ]
    for r in rows:
        write_fragment(local_lake, [r])
    _consolidate_and_resample(local_lake, anchor)
    _assert_matches_reference(local_lake, rows, anchor)
    for e in local_lake.list("silver"):
        assert pq.read_schema(local_lake.path(e.key)).remove_metadata() == SILVER


def test_calendar_groups_start_at_1962_and_survive_missing_rows(local_lake: Lake) -> None:
    days = sessions()[:40]
    rows = simple_rows("OLD", [d for i, d in enumerate(days) if i not in (1, 2, 3, 9)])
    write_fragment(local_lake, rows)
    _consolidate_and_resample(local_lake)
    bars = [b for month in sorted(read_silver(local_lake, 5).items()) for b in month[1]]
    # group 0 is sessions 0..4 of 1962; with rows 1-3 missing it holds sessions 0 and 4
    assert bars[0][1:3] == (days[0], days[4])
    assert bars[0][8] == 2
    assert bars[1][1:3] == (days[5], days[9 - 1])  # session 9 missing: the group ends at 8
    _assert_matches_reference(local_lake, rows, "calendar")


@pytest.mark.parametrize("anchor", ["calendar", "symbol"])
def test_backfilled_old_date_reaches_silver_and_equals_a_full_rebuild(
    tmp_path: Path, anchor: fib.Anchor
) -> None:
    days = window(dt.date(2023, 3, 1), 80)
    hole = days[7]
    rows = simple_rows("AAA", days) + simple_rows("BBB", days, base=50)
    first = [r for r in rows if not (r.symbol == "AAA" and r.date == hole)]
    late = [r for r in rows if r.symbol == "AAA" and r.date == hole]
    inc = Lake(str(tmp_path / "inc"))
    write_fragment(inc, [r for r in first if r.symbol == "AAA"])
    write_fragment(inc, [r for r in first if r.symbol == "BBB"])
    _consolidate_and_resample(inc, anchor)
    write_fragment(inc, late)  # a backfill of an old date, after silver exists
    report = consolidate.run(inc, workers=1)
    assert report.earliest_changed == hole
    assert resample.run(inc, anchor=anchor, workers=1).ok
    full = Lake(str(tmp_path / "full"))
    write_fragment(full, rows[:80])
    write_fragment(full, rows[80:])
    _consolidate_and_resample(full, anchor, full=True)
    assert snapshot(inc) == snapshot(full)
    _assert_matches_reference(inc, rows, anchor)


def test_rewriting_a_month_keeps_other_symbols_and_earlier_groups(local_lake: Lake) -> None:
    days = window(dt.date(2024, 6, 3), 19)  # the sessions of June 2024
    assert {d.month for d in days} == {6}
    aaa, bbb = simple_rows("AAA", days), simple_rows("BBB", days[:14], base=30)
    write_fragment(local_lake, aaa[:14])
    write_fragment(local_lake, bbb)
    _consolidate_and_resample(local_lake)
    before = read_silver(local_lake, 3)[(2024, 6)]
    write_fragment(local_lake, aaa[14:])
    _consolidate_and_resample(local_lake)
    after = read_silver(local_lake, 3)[(2024, 6)]
    assert [b for b in after if b[0] == "BBB"] == [
        (*b[:-1], True)
        for b in before
        if b[0] == "BBB"  # now complete: the lake moved on
    ]
    old_aaa, new_aaa = [b for b in before if b[0] == "AAA"], [b for b in after if b[0] == "AAA"]
    assert new_aaa[: len(old_aaa) - 1] == old_aaa[:-1]
    assert len(new_aaa) > len(old_aaa)
    _assert_matches_reference(local_lake, aaa + bbb, "calendar")


def test_complete_flips_for_a_delisted_symbol_when_the_lake_advances(tmp_path: Path) -> None:
    days = window(dt.date(2024, 1, 2), 60)
    gone = simple_rows("GONE", days[:11])  # delisted in January
    live = simple_rows("LIVE", days[:12])
    new = simple_rows("NEW", days[45:])  # listed in March: touches no January file
    inc = Lake(str(tmp_path / "inc"))
    write_fragment(inc, gone)
    write_fragment(inc, live)
    _consolidate_and_resample(inc)
    january = read_silver(inc, 8)[(2024, 1)]
    assert [b for b in january if b[0] == "GONE"][-1][-1] is False  # its group is still open
    write_fragment(inc, new)
    _consolidate_and_resample(inc)
    january = read_silver(inc, 8)[(2024, 1)]
    assert [b for b in january if b[0] == "GONE"][-1][-1] is True
    full = Lake(str(tmp_path / "full"))
    for rows in (gone, live, new):
        write_fragment(full, rows)
    _consolidate_and_resample(full, full=True)
    assert snapshot(inc) == snapshot(full)
    _assert_matches_reference(inc, gone + live + new, "calendar")


def test_an_incremental_run_with_another_anchor_is_refused(local_lake: Lake) -> None:
    write_fragment(local_lake, simple_rows("AAA", window(dt.date(2024, 1, 2), 30)))
    _consolidate_and_resample(local_lake, "calendar")
    with pytest.raises(AnchorMismatch, match="--full"):
        resample.run(local_lake, anchor="symbol", workers=1)
    with pytest.raises(AnchorMismatch):
        resample.run(local_lake, anchor="symbol", full=True, symbols=["AAA"], workers=1)
    assert resample.run(local_lake, anchor="symbol", full=True, workers=1).ok
    assert resample.run(local_lake, anchor="symbol", workers=1).ok
    rows = simple_rows("AAA", window(dt.date(2024, 1, 2), 30))
    _assert_matches_reference(local_lake, rows, "symbol")


def test_shards_together_produce_exactly_one_runs_output(tmp_path: Path) -> None:
    days = window(dt.date(2022, 12, 1), 60)
    rng = random.Random(7)
    rows = []
    for i in range(12):
        lo = rng.randrange(0, 30)
        rows += simple_rows(f"S{i:02d}", days[lo : rng.randrange(lo + 1, 61)], base=10 + i)
    one, many = Lake(str(tmp_path / "one")), Lake(str(tmp_path / "many"))
    for lake in (one, many):
        for sym in sorted({r.symbol for r in rows}):
            write_fragment(lake, [r for r in rows if r.symbol == sym and r.date < days[40]])
    _consolidate_and_resample(one)
    for i in range(3):
        assert consolidate.run(many, shard=Shard(i, 3), workers=1).ok
    for i in range(3):
        report = resample.run(many, shard=Shard(i, 3), workers=1)
        assert all(r.merged == (i == 2) for r in report.per_interval)
        assert snapshot(many) == ({} if i < 2 else snapshot(one))
    for lake in (one, many):  # an incremental round, with a new session for every symbol
        for sym in sorted({r.symbol for r in rows}):
            late = [r for r in rows if r.symbol == sym and r.date >= days[40]]
            if late:
                write_fragment(lake, late)
    _consolidate_and_resample(one)
    for i in (2, 0, 1):
        assert consolidate.run(many, shard=Shard(i, 3), workers=1).ok
        assert resample.run(many, shard=Shard(i, 3), workers=1).ok
    assert snapshot(many) == snapshot(one)
    _assert_matches_reference(many, rows, "calendar")
    assert not many.list(resample.STAGING)


def test_a_symbol_removed_from_the_lake_leaves_silver(local_lake: Lake) -> None:
    days = window(dt.date(2024, 3, 1), 30)
    write_fragment(local_lake, simple_rows("AAA", days))
    write_fragment(local_lake, simple_rows("BBB", days))
    _consolidate_and_resample(local_lake)
    local_lake.delete_prefix(layout.symbol_dir("BBB"))
    assert resample.run(local_lake, workers=1).ok
    assert {b[0] for m in read_silver(local_lake, 3).values() for b in m} == {"AAA"}


def test_data_written_without_the_consolidator_is_resampled(local_lake: Lake) -> None:
    days = window(dt.date(2021, 5, 3), 50)
    rows = simple_rows("EXT", days[:30])
    local_lake.write_table(layout.consolidated("EXT"), table_of(rows))
    assert resample.run(local_lake, workers=1).ok
    _assert_matches_reference(local_lake, rows, "calendar")
    rows = simple_rows("EXT", days)  # rewritten by hand: no manifest says what changed
    local_lake.write_table(layout.consolidated("EXT"), table_of(rows))
    assert resample.run(local_lake, workers=1).ok
    _assert_matches_reference(local_lake, rows, "calendar")


def test_nothing_changes_on_a_rerun_and_dry_run_writes_nothing(local_lake: Lake) -> None:
    write_fragment(local_lake, simple_rows("AAA", window(dt.date(2024, 1, 2), 30)))
    assert consolidate.run(local_lake, workers=1).ok
    dry = resample.run(local_lake, workers=1, dry_run=True)
    assert (
        dry.ok
        and not local_lake.list("silver")
        and not local_lake.exists(layout.silver_checkpoint(3))
    )
    resample.run(local_lake, workers=1)
    before = snapshot(local_lake)
    again = resample.run(local_lake, workers=1)
    assert again.files_written == 0
    assert snapshot(local_lake) == before


def test_silver_of_an_older_release_is_rebuilt_not_patched(
    local_lake: Lake, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = simple_rows("AAA", window(dt.date(2024, 1, 2), 60))
    write_fragment(local_lake, rows)
    _consolidate_and_resample(local_lake)
    for n in FIB_INTERVALS:  # as an older release left it: other bytes, format 1
        key = layout.silver_checkpoint(n)
        local_lake.write_json(key, {**local_lake.read_json(key), "format": 1})
    for e in local_lake.list("silver"):
        local_lake.write_bytes(e.key, pq_bytes_of_older_release(local_lake, e.key))
    caplog.set_level("WARNING", logger="batch.checkpoint")
    assert resample.run(local_lake, workers=1).ok  # incremental: nothing new in bronze
    assert "older release" in caplog.text
    fresh = Lake(str(tmp_path / "fresh"))
    write_fragment(fresh, rows)
    _consolidate_and_resample(fresh)
    assert snapshot(local_lake) == snapshot(fresh)


def pq_bytes_of_older_release(lake: Lake, key: str) -> bytes:
    """A month file as release 1 wrote it: statistics on every column."""
    table = pq.read_table(lake.path(key))
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="lz4", write_statistics=True)
    return bytes(sink.getvalue().to_pybytes())


def test_cli_runs_and_rejects_bad_input(
    local_lake: Lake, capsys: pytest.CaptureFixture[str]
) -> None:
    write_fragment(local_lake, simple_rows("AAA", window(dt.date(2024, 1, 2), 30)))
    assert consolidate.main(["--lake", local_lake.url, "--no-progress"]) == 0
    assert resample.main(["--lake", local_lake.url, "--intervals", "3,5", "--no-progress"]) == 0
    assert "3d" in capsys.readouterr().out
    assert local_lake.exists(layout.silver_checkpoint(5))
    assert not local_lake.exists(layout.silver_checkpoint(8))
    assert resample.main(["--lake", local_lake.url, "--anchor", "symbol", "--intervals", "3"]) == 1
    with pytest.raises(SystemExit):
        resample.main(["--intervals", "4"])


# -- the property -----------------------------------------------------------------------------
_ALPHABETS = (("rest", "live"), ("rest", "export", "flatfile"), ("live", "export", "flatfile"))
"""Source mixes without the one corner where the contract's rule is not associative."""


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[list[list[Row]]], str]:
    """Random histories cut into fragments and the fragments into ingestion batches."""
    start = draw(st.sampled_from([0, 240, 15_480]))  # 1962, early 1963, late 2023
    width = draw(st.integers(8, 130))
    window = sessions()[start : start + width]
    sources = draw(st.sampled_from(_ALPHABETS))
    anchor = draw(st.sampled_from(["calendar", "symbol"]))
    rng = random.Random(draw(st.integers(0, 2**32)))
    stamps = rng.sample(range(1, 1_000_000), 5 * width * 2 + 10)  # distinct ingested_at
    fragments: list[list[Row]] = []
    for s in range(draw(st.integers(1, 5))):
        symbol = "ABCDE"[s] + "X" * s
        lo = 0 if rng.random() < 0.4 else rng.randrange(width)  # listed before or inside
        hi = width - 1 if rng.random() < 0.4 else rng.randrange(lo, width)  # delisted or not
        days = [d for d in window[lo : hi + 1] if rng.random() > 0.25]  # gaps and halts
        if not days:
            days = [window[lo]]
        mains: list[Row] = []
        extras: list[Row] = []
        for d in days:
            for version in range(1 if rng.random() < 0.7 else 2):
                p = float(rng.randint(5, 60))
                row = Row(
                    symbol, d, p, p + 1 + rng.randint(0, 5), p - rng.randint(0, 4), p + 1,
                    float(rng.randint(0, 10**6)), rng.choice(sources), stamps.pop(),
                )  # fmt: skip
                (mains if version == 0 else extras).append(row)
        i = 0
        while i < len(mains):  # consecutive rows into date= or range= fragments
            size = rng.randint(1, 5)
            fragments.append(mains[i : i + size])
            i += size
        fragments += [[r] for r in extras]  # written as range=D_D to keep keys distinct
    if draw(st.booleans()):
        rng.shuffle(fragments)  # any order: every batch may backfill
    else:  # mostly in date order, as a daily feed arrives, with a few late fragments
        fragments.sort(key=lambda f: f[0].date)
        for _ in range(rng.randint(0, 3)):
            fragments.append(fragments.pop(rng.randrange(len(fragments))))
    cuts = sorted(rng.sample(range(1, len(fragments)), min(len(fragments) - 1, rng.randint(0, 6))))
    bounds = [0, *cuts, len(fragments)]
    batches = [fragments[a:b] for a, b in itertools.pairwise(bounds)]
    return batches, anchor


def _write(lake: Lake, fragment: list[Row], extras: set[int]) -> None:
    key = None
    if id(fragment) in extras:
        d = fragment[0].date
        key = layout.range_fragment(fragment[0].symbol, d, d)
    write_fragment(lake, fragment, key)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenarios(), st.lists(st.booleans(), min_size=8, max_size=8), st.booleans())
def test_incremental_batches_equal_a_full_rebuild_and_the_reference(
    scenario: tuple[list[list[list[Row]]], str], resample_after: list[bool], forked: bool
) -> None:
    batches, anchor_text = scenario
    anchor: fib.Anchor = "symbol" if anchor_text == "symbol" else "calendar"
    everything = [f for batch in batches for f in batch]
    seen: dict[str, int] = {}
    extras = set()
    for f in everything:  # a second version of a date goes to range=D_D
        key = f"{f[0].symbol}/{f[0].date}" if len(f) == 1 else ""
        if key and key in seen:
            extras.add(id(f))
        seen[key] = 1
    with tempfile.TemporaryDirectory() as tmp:
        inc, full = Lake(f"{tmp}/inc"), Lake(f"{tmp}/full")
        for i, batch in enumerate(batches):
            for f in batch:
                _write(inc, f, extras)
            assert consolidate.run(inc, workers=1, retention_days=0).ok
            if resample_after[i] or i == len(batches) - 1:  # sometimes two consolidations
                assert resample.run(inc, anchor=anchor, workers=1).ok
        for f in everything:
            _write(full, f, extras)
        assert consolidate.run(full, workers=1, cleanup=False).ok
        # the rebuild sometimes on forked workers (the full market's path), else inline
        processes = forked and forking.available()
        assert resample.run(
            full, anchor=anchor, full=True, workers=2 if processes else 1, processes=processes
        ).ok
        assert snapshot(inc) == snapshot(full)
        _assert_matches_reference(full, [r for f in everything for r in f], anchor)


def test_silver_deleted_behind_its_checkpoint_is_rebuilt(local_lake: Lake) -> None:
    days = window(dt.date(2024, 3, 1), 30)
    write_fragment(local_lake, simple_rows("AAA", days))
    write_fragment(local_lake, simple_rows("BBB", days[5:]))
    _consolidate_and_resample(local_lake)
    built = snapshot(local_lake)
    local_lake.delete_prefix(layout.silver_dir(5))
    with pytest.raises(resample.SilverLost):
        resample.run(local_lake, workers=1, symbols=["AAA"])
    assert resample.run(local_lake, workers=1).ok
    assert snapshot(local_lake) == built
