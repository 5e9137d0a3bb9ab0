"""batch.consolidate: the lake contract's merge rules, incremental runs, shards, failures, CLI."""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch import consolidate, resample
from batch.engine import manifest as mf
from batch.engine import screen
from core import calendar, layout
from core.lake import Lake
from core.schemas import BRONZE_DAILY
from core.sharding import Shard
from tests.batch_support import (
    Row,
    reference_merge,
    sessions,
    simple_rows,
    snapshot,
    table_of,
    write_fragment,
)

pytestmark = pytest.mark.unit

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def _window(first: dt.date, count: int) -> list[dt.date]:
    i = calendar.session_index(first)
    return sessions()[i : i + count]


def _rows(lake: Lake, symbol: str) -> list[tuple[object, ...]]:
    t = pq.read_table(lake.path(layout.consolidated(symbol)))
    return [tuple(r.values()) for r in t.to_pylist()]


def _expected(rows: list[Row]) -> dict[str, list[tuple[object, ...]]]:
    return {
        s: [tuple(r.values()) for r in table_of(kept).to_pylist()]
        for s, kept in reference_merge(rows).items()
    }


def _run(lake: Lake, **kw: object) -> consolidate.ConsolidateReport:
    kw.setdefault("workers", 1)
    kw.setdefault("now", NOW)
    kw.setdefault("cleanup", False)
    return consolidate.run(lake, **kw)  # type: ignore[arg-type]


def test_every_fragment_kind_is_merged_into_one_row_per_date(local_lake: Lake) -> None:
    days = _window(dt.date(2024, 12, 20), 20)
    rows = simple_rows("AAA", days[:12], ingested=1)
    write_fragment(local_lake, rows[:8])  # range=
    for r in rows[8:]:
        write_fragment(local_lake, [r])  # date=
    # a second range= overlapping both, newer for some dates
    redo = simple_rows("AAA", days[6:16], base=40, ingested=5)
    write_fragment(local_lake, redo)
    report = _run(local_lake)
    assert report.ok and report.changed == 1 and report.fragments_merged == 6
    everything = rows + redo
    assert _rows(local_lake, "AAA") == _expected(everything)["AAA"]
    t = pq.read_table(local_lake.path(layout.consolidated("AAA")))
    assert t.schema.remove_metadata() == BRONZE_DAILY
    assert t.num_rows == len(days[:16])
    assert t["date"].to_pylist() == sorted(set(t["date"].to_pylist()))


def test_newer_ingested_at_wins_and_live_never_replaces_rest(local_lake: Lake) -> None:
    d = _window(dt.date(2024, 3, 4), 5)
    first = [
        Row("AAA", d[0], 10, 12, 9, 11, 100, "rest", 1),
        Row("AAA", d[1], 10, 12, 9, 11, 100, "rest", 1),
        Row("AAA", d[2], 10, 12, 9, 11, 100, "live", 1),
        Row("AAA", d[3], 10, 12, 9, 11, 100, "rest", 1),
        Row("AAA", d[4], 10, 12, 9, 11, 100, "live", 1),
    ]
    same_batch = [
        Row("AAA", d[0], 20, 22, 19, 21, 200, "live", 9),  # newer live: loses to rest
        Row("AAA", d[1], 30, 32, 29, 31, 300, "rest", 9),  # newer rest: wins
        Row("AAA", d[2], 40, 42, 39, 41, 400, "export", 9),  # newer export beats live
    ]
    for r in first + same_batch:
        key = layout.range_fragment(r.symbol, r.date, r.date) if r.ingested == 9 else None
        write_fragment(local_lake, [r], key)
    assert _run(local_lake).ok
    assert _rows(local_lake, "AAA") == _expected(first + same_batch)["AAA"]
    closes = [r[5] for r in _rows(local_lake, "AAA")]
    assert closes == [11, 31, 41, 11, 11]
    # the same rules across runs: data.parquet holds the old rows, fragments arrive later
    later = [
        Row("AAA", d[3], 50, 52, 49, 51, 500, "live", 20),  # live after rest: ignored
        Row("AAA", d[4], 60, 62, 59, 61, 600, "rest", 0),  # rest beats an older... live
        Row("AAA", d[1], 70, 72, 69, 71, 700, "rest", 2),  # older than the held row: ignored
    ]
    for r in later:
        write_fragment(local_lake, [r], layout.range_fragment(r.symbol, r.date, r.date))
    report = _run(local_lake)
    assert report.ok and report.fragments_merged == 3
    assert [r[5] for r in _rows(local_lake, "AAA")] == [11, 31, 41, 11, 61]
    assert report.earliest_changed == d[4]
    assert _rows(local_lake, "AAA") == _expected(first + same_batch + later)["AAA"]


def test_a_backfilled_old_date_is_merged_and_recorded_in_the_manifest(local_lake: Lake) -> None:
    days = _window(dt.date(2023, 5, 1), 30)
    rows = simple_rows("AAA", days)
    write_fragment(local_lake, [r for r in rows if r.date != days[4]])
    write_fragment(local_lake, simple_rows("BBB", days))
    assert _run(local_lake).ok
    before = mf.read(local_lake)["AAA"]
    assert before.last_date == days[-1] and before.rows == 29
    assert _run(local_lake).fragments_merged == 0  # nothing new: nothing done
    write_fragment(local_lake, [r for r in rows if r.date == days[4]])  # older than last date
    report = _run(local_lake)
    assert report.ok and report.fragments_merged == 1 and report.changed == 1
    assert report.earliest_changed == days[4]
    state = mf.read(local_lake)["AAA"]
    assert state.rows == 30 and state.version == before.version + 1
    assert state.earliest_changed == days[4]
    assert state.earliest_since(before.version) == (True, days[4])
    assert len(state.fragments) == 2
    assert [r[1] for r in _rows(local_lake, "AAA")] == days
    assert mf.read(local_lake)["BBB"].version == 1  # untouched


def test_shards_together_equal_one_run(tmp_path: Path) -> None:
    days = _window(dt.date(2022, 1, 3), 40)
    rng = random.Random(11)
    rows: list[Row] = []
    for i in range(9):
        lo = rng.randrange(0, 20)
        rows += simple_rows(f"S{i}", days[lo : rng.randrange(lo + 1, 41)], base=5 + i)
    one, many = Lake(str(tmp_path / "one")), Lake(str(tmp_path / "many"))
    for lake in (one, many):
        for s in sorted({r.symbol for r in rows}):
            mine = [r for r in rows if r.symbol == s]
            write_fragment(lake, mine[: len(mine) // 2 + 1])
            for r in mine[len(mine) // 2 + 1 :]:
                write_fragment(lake, [r])
    assert _run(one).ok
    for i in (1, 0, 2):
        assert _run(many, shard=Shard(i, 3)).ok
    assert not many.exists(layout.consolidation_manifest())  # only the shards' parts
    symbols = sorted({r.symbol for r in rows})
    for s in symbols:
        assert _rows(many, s) == _rows(one, s)

    def comparable(lake: Lake) -> dict[str, mf.SymbolState]:
        return {
            s: dataclasses.replace(st, revision=0, data_size=None, fragments=[])
            for s, st in mf.read(lake).items()
        }

    assert comparable(many) == comparable(one)
    assert {s: [f.key for f in st.fragments] for s, st in mf.read(many).items()} == {
        s: [f.key for f in st.fragments] for s, st in mf.read(one).items()
    }
    assert _run(many).fragments_merged == 0  # the unsharded run folds the parts in
    assert many.exists(layout.consolidation_manifest())
    assert not [e for e in many.list(layout.META) if ".shard-" in e.key]
    assert comparable(many) == comparable(one)


@pytest.mark.slow
def test_a_process_pool_gives_the_same_result(tmp_path: Path) -> None:
    days = _window(dt.date(2020, 6, 1), 12)
    inline, pooled = Lake(str(tmp_path / "a")), Lake(str(tmp_path / "b"))
    symbols = [f"P{i:02d}" for i in range(70)]  # above the inline threshold
    for lake in (inline, pooled):
        for i, s in enumerate(symbols):
            write_fragment(lake, simple_rows(s, days, base=i))
    assert _run(inline, workers=1).ok
    report = _run(pooled, workers=2)
    assert report.ok and report.changed == 70
    for s in symbols:
        assert _rows(pooled, s) == _rows(inline, s)


def test_a_corrupt_fragment_fails_its_symbol_and_the_others_are_merged(
    local_lake: Lake, capsys: pytest.CaptureFixture[str]
) -> None:
    days = _window(dt.date(2024, 2, 1), 10)
    write_fragment(local_lake, simple_rows("GOOD", days))
    write_fragment(local_lake, simple_rows("BAD", days[:5]))
    bad_key = layout.daily_fragment("BAD", days[6])
    local_lake.write_bytes(bad_key, b"PAR1 this is not parquet")
    other = layout.daily_fragment("WRONG", days[7])  # a fragment holding another symbol's rows
    local_lake.write_table(other, table_of([Row("AAA", days[7], 1, 2, 1, 1, 1)]))
    report = _run(local_lake)
    assert not report.ok
    assert set(report.failed) == {"BAD", "WRONG"}
    assert "another symbol" in report.failed["WRONG"]
    assert local_lake.exists(layout.consolidated("GOOD"))
    assert set(mf.read(local_lake)) == {"GOOD"}
    code = consolidate.main(["--lake", local_lake.url, "--no-progress"])
    assert code == 1
    err = capsys.readouterr().err
    assert "FAILED BAD" in err and "FAILED WRONG" in err
    local_lake.delete(bad_key)
    local_lake.delete(other)
    assert _run(local_lake).ok
    assert len(_rows(local_lake, "BAD")) == 5


def test_cli_help_progress_and_summary(
    local_lake: Lake, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        consolidate.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--lake", "--symbols", "--shard", "--dry-run", "--retention-days"):
        assert flag in out
    days = _window(dt.date(2024, 2, 1), 10)
    for s in ("AAA", "BBB"):
        write_fragment(local_lake, simple_rows(s, days))
    dry = consolidate.main(["--lake", local_lake.url, "--dry-run", "--no-progress"])
    assert dry == 0 and not local_lake.exists(layout.consolidated("AAA"))
    assert "[dry run]" in capsys.readouterr().out
    report = consolidate.run(local_lake, workers=1, progress=True, now=NOW)
    assert "consolidate" in capsys.readouterr().err  # the progress bar
    assert report.summary().startswith("2 symbols examined, 2 changed, 2 fragments merged")
    assert consolidate.main(["--lake", local_lake.url, "--symbols", "AAA", "--no-progress"]) == 0
    assert "1 symbols examined, 0 changed" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        consolidate.main(["--lake", local_lake.url, "--shard", "3/2"])


def test_screening_a_chunk_at_once_equals_screening_each_fragment() -> None:
    day = dt.date(2024, 3, 28)
    good = Row("AAA", day, 10.0, 11.0, 9.0, 10.5, 100.0)
    tables = [
        table_of([good]),
        table_of([dataclasses.replace(good, symbol="BBB", high=8.0)]),  # high < low, and more
        table_of([]),
        table_of(
            [
                dataclasses.replace(good, symbol="CCC"),
                dataclasses.replace(good, symbol="CCC", date=dt.date(2024, 3, 29)),  # Good Friday
                dataclasses.replace(good, symbol="CCC", date=dt.date(2024, 4, 1), source="fax"),
            ]
        ),
        table_of([dataclasses.replace(good, symbol="DDD", volume=-1.0)]),
    ]
    together = screen.split_many(tables)
    alone = [screen.split(t) for t in tables]
    assert len(together) == len(alone)
    for (ok_a, why_a, bad_a), (ok_b, why_b, bad_b) in zip(together, alone, strict=True):
        assert ok_a.equals(ok_b) and why_a == why_b and bad_a.equals(bad_b)
    assert [len(why) for _, why, _ in together] == [0, 1, 0, 2, 1]


def test_a_lost_data_parquet_fails_its_symbol_until_rebuilt_on_request(
    local_lake: Lake, capsys: pytest.CaptureFixture[str]
) -> None:
    days = _window(dt.date(2024, 2, 1), 6)
    write_fragment(local_lake, simple_rows("AAA", days[:4]))
    write_fragment(local_lake, simple_rows("BBB", days[:4]))
    assert _run(local_lake).ok
    assert resample.run(local_lake, workers=1).ok
    local_lake.delete(layout.consolidated("AAA"))  # lost; a new session arrives
    write_fragment(local_lake, simple_rows("AAA", days[4:], base=20))
    report = _run(local_lake)
    assert set(report.failed) == {"AAA"}
    assert "missing" in report.failed["AAA"] and "--rebuild-missing" in report.failed["AAA"]
    assert not local_lake.exists(layout.consolidated("AAA"))  # no file of only the new rows
    assert _run(local_lake).failed.keys() == {"AAA"}  # and it stays loud
    code = consolidate.main(["--lake", local_lake.url, "--no-progress", "--rebuild-missing"])
    assert code == 0
    assert [r[1] for r in _rows(local_lake, "AAA")] == days  # every fragment was still there
    state = mf.read(local_lake)["AAA"]
    assert state.rows == 6 and state.earliest_changed == days[0]  # resample redoes it all
    assert resample.run(local_lake, workers=1).ok
    incremental = snapshot(local_lake)
    assert resample.run(local_lake, workers=1, full=True).ok
    assert snapshot(local_lake) == incremental


def test_command_line_mistakes_are_errors(
    local_lake: Lake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_fragment(local_lake, simple_rows("AAA", _window(dt.date(2024, 2, 1), 3)))
    mistakes = {
        "three slashes": ["--lake", "file://" + str(tmp_path).lstrip("/")],
        "no lake at": ["--lake", (tmp_path / "nowhere").as_uri()],
        "unknown symbols NOPE": ["--lake", local_lake.url, "--symbols", "AAA,NOPE"],
        "not a whole number >= 0": ["--lake", local_lake.url, "--retention-days", "-5"],
    }
    for said, argv in mistakes.items():
        with pytest.raises(SystemExit) as exc:
            consolidate.main(argv)
        assert exc.value.code == 2, argv
        assert said in capsys.readouterr().err, argv
    assert not (tmp_path / "nowhere").exists()


def test_an_unreadable_fragment_is_named_in_the_error(local_lake: Lake) -> None:
    days = _window(dt.date(2024, 2, 1), 3)
    write_fragment(local_lake, simple_rows("AAA", days[:2]))
    key = layout.daily_fragment("AAA", days[2])
    local_lake.write_bytes(key, b"")
    report = _run(local_lake)
    assert key in report.failed["AAA"]
    nulls = table_of(simple_rows("AAA", days[2:])).set_column(
        5, "close", pa.array([None], pa.float64())
    )
    local_lake.write_table(key, nulls)
    assert key in _run(local_lake).failed["AAA"]


def test_files_bronze_does_not_name_are_reported_and_left_alone(
    local_lake: Lake, caplog: pytest.LogCaptureFixture
) -> None:
    days = _window(dt.date(2024, 2, 1), 3)
    write_fragment(local_lake, simple_rows("AAA", days))
    stray = f"{layout.DAILY}/symbol=AAA/date=2024-2-5.parquet"
    local_lake.write_table(stray, table_of(simple_rows("AAA", days[:1])))
    with caplog.at_level("WARNING", logger="batch.consolidate"):
        assert _run(local_lake).ok
    assert stray in caplog.text
    assert local_lake.exists(stray) and len(_rows(local_lake, "AAA")) == 3
