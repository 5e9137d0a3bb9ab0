"""batch.gold: every column equals the pandas definitions; incremental == full byte for byte."""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from batch import consolidate, gold, resample
from batch.engine import fib, gold_inputs, gold_state
from core import layout
from core.lake import Lake
from core.schemas import GOLD_INTERVALS, gold_schema
from core.sharding import Shard
from tests.batch_support import (
    Row,
    reference_bars,
    reference_merge,
    snapshot,
    window,
    write_fragment,
)
from tests.unit.test_indicators import assert_close, pandas_reference

pytestmark = pytest.mark.unit


@dataclasses.dataclass(frozen=True)
class SplitAt(gold_inputs.Splits):
    """A test's split book: ``symbol`` split ``ratio``-for-1 on ``day``."""

    symbol: str = ""
    day: dt.date = dt.date(1970, 1, 1)
    ratio: float = 1.0

    def versions(self, symbols: object) -> dict[str, str]:
        out = super().versions(symbols)  # type: ignore[arg-type]
        if self.symbol in out:
            out[self.symbol] = f"split {self.day} {self.ratio}"
        return out

    def adjust(self, daily: fib.Daily) -> fib.Daily:
        if self.symbol not in daily.symbols:
            return daily
        i = daily.symbols.index(self.symbol)
        lo, hi = int(daily.offsets[i]), int(daily.offsets[i + 1])
        before = np.zeros(daily.rows, dtype=bool)
        before[lo:hi] = daily.date[lo:hi] < (self.day - dt.date(1970, 1, 1)).days
        cols: dict[str, Any] = {}
        for name in fib.PRICE_COLUMNS:
            values = np.array(getattr(daily, name), dtype=np.float64)
            if name == "volume":
                values[before] = values[before] * self.ratio
            else:
                values[before] = values[before] / self.ratio
            cols[name] = values
        return dataclasses.replace(daily, **cols)


def history_of(rows: Sequence[Row], book: gold_inputs.Splits | None = None) -> dict[str, list[Row]]:
    """The consolidated rows per symbol, split-adjusted by ``book`` (test books only)."""
    merged = reference_merge(rows)
    if not isinstance(book, SplitAt) or book.symbol not in merged:
        return merged
    out = dict(merged)
    out[book.symbol] = [
        dataclasses.replace(
            r,
            open=r.open / book.ratio,
            high=r.high / book.ratio,
            low=r.low / book.ratio,
            close=r.close / book.ratio,
            volume=r.volume * book.ratio,
        )
        if r.date < book.day
        else r
        for r in merged[book.symbol]
    ]
    return out


def read_gold(lake: Lake, interval: str) -> dict[str, pa.Table]:
    """Every symbol's gold rows of one interval, by date."""
    files = [e.key for e in lake.list(layout.gold_dir(interval), suffix=".parquet")]
    if not files:
        return {}
    table = pa.concat_tables([pq.read_table(lake.path(k)) for k in files])
    assert table.schema.equals(gold_schema(interval))
    key = "date" if interval == "1d" else "start_date"
    out = {}
    for s in sorted(set(table["symbol"].to_pylist())):
        part = table.filter(pa.compute.equal(table["symbol"], s))
        out[s] = part.sort_by(key)
    return out


def assert_gold_matches_pandas(lake: Lake, history: dict[str, list[Row]]) -> None:
    """Keys, close and every indicator of every interval against pandas over the bars."""
    for interval in GOLD_INTERVALS:
        got = read_gold(lake, interval)
        assert sorted(got) == sorted(history), interval
        bars: dict[str, list[tuple[object, ...]]]
        if interval == "1d":
            bars = {
                s: [(r.date, r.high, r.low, r.close) for r in rows] for s, rows in history.items()
            }
        else:
            by_month = reference_bars(history, int(interval[:-1]), "calendar")
            per: dict[str, list[tuple[object, ...]]] = defaultdict(list)
            for month in sorted(by_month):
                for b in by_month[month]:
                    per[str(b[0])].append(b)
            bars = {s: [(b[1], b[4], b[5], b[6]) for b in v] for s, v in per.items()}
            for s, v in per.items():
                assert got[s]["end_date"].to_pylist() == [b[2] for b in v]
                assert got[s]["complete"].to_pylist() == [b[9] for b in v]
        for s, want_bars in bars.items():
            table = got[s]
            key = "date" if interval == "1d" else "start_date"
            assert table[key].to_pylist() == [b[0] for b in want_bars], (interval, s)
            high = np.array([b[1] for b in want_bars], dtype=np.float64)
            low = np.array([b[2] for b in want_bars], dtype=np.float64)
            close = np.array([b[3] for b in want_bars], dtype=np.float64)
            assert_close(table["close"].to_numpy(), close, f"{interval} {s} close")
            want = pandas_reference(high, low, close)
            for name, values in want.items():
                column = table[name].to_numpy(zero_copy_only=False).astype(np.float64)
                assert_close(column, values, f"{interval} {s} {name}")


def build(lake: Lake, book: gold_inputs.Splits | None = None, **kw: object) -> gold.GoldReport:
    assert consolidate.run(lake, workers=1).ok
    assert resample.run(lake, workers=1).ok
    report = gold.run(lake, workers=1, splits=book, **kw)  # type: ignore[arg-type]
    assert report.ok, report.failed
    return report


def assert_equals_full_rebuild(lake: Lake, tmp: Path, book: gold_inputs.Splits | None) -> None:
    """A copy of the lake rebuilt with --full has the same gold, byte for byte."""
    copy = tmp / f"copy-{len(list(tmp.iterdir()))}"
    shutil.copytree(lake.root, copy)
    other = Lake(f"file://{copy}")
    assert gold.run(other, workers=1, full=True, splits=book).ok
    assert snapshot(other, "gold") == snapshot(lake, "gold")
    for interval in GOLD_INTERVALS:  # the same symbols to resume (points may differ: see below)
        mine, theirs = gold_state.read(lake, interval), gold_state.read(other, interval)
        assert mine is not None and theirs is not None
        assert mine.resume.keys() == theirs.resume.keys()
        # an untouched symbol whose last bar became complete as the lake's last date moved keeps
        # resuming before that bar, where a rebuild resumes after it: both continue exactly
        assert all(mine.resume[s] <= theirs.resume[s] for s in mine.resume)


# -- the property ------------------------------------------------------------------------------
DAYS = window(dt.date(2024, 6, 3), 240)


@st.composite
def market(draw: st.DrawFn) -> list[Row]:
    """A few symbols: listings and delistings, gaps, one-row histories, constant prices."""
    rows: list[Row] = []
    for k in range(draw(st.integers(1, 4))):
        symbol = f"S{k}"
        first = draw(st.integers(0, 200))
        last = draw(st.integers(first, 210))
        present = [
            d for d in DAYS[first : last + 1] if draw(st.integers(0, 9)) > 0 or d == DAYS[first]
        ]
        kind = draw(st.sampled_from(["walk", "constant", "one"]))
        if kind == "one":
            present = present[:1]
        price = draw(st.floats(1.0, 500.0))
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        for d in present:
            if kind == "walk":
                price = max(0.5, price * float(np.exp(rng.normal(0, 0.03))))
            spread = 0.0 if kind == "constant" else abs(float(rng.normal(0, 0.01))) * price
            rows.append(Row(symbol, d, price, price + spread, price - spread / 2, price, 1000.0))
    return rows


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # shrinking lakes takes minutes
)
@pytest.mark.slow
@given(market(), st.data())
def test_incremental_runs_equal_a_full_rebuild_and_pandas(
    tmp_path_factory: pytest.TempPathFactory, rows: list[Row], data: st.DataObject
) -> None:
    tmp = tmp_path_factory.mktemp("gold")
    (tmp / "lake").mkdir()
    lake = Lake(f"file://{tmp / 'lake'}")
    # history up to session 200, then new sessions, a backfill of an old date, a split
    initial = [r for r in rows if r.date <= DAYS[200]]
    if not initial:
        return
    for s in sorted({r.symbol for r in initial}):
        write_fragment(lake, [r for r in initial if r.symbol == s])
    build(lake)
    assert_gold_matches_pandas(lake, history_of(initial))
    seen = list(initial)
    for day in DAYS[201:205]:  # one new session at a time, as the daily run
        new = [r for r in rows if r.date == day]
        for r in new:
            write_fragment(lake, [dataclasses.replace(r, ingested=1)])
        seen += new
        build(lake)
    assert_equals_full_rebuild(lake, tmp, None)
    # a backfilled old session for one symbol (a gap filled, or a value corrected)
    symbol = data.draw(st.sampled_from(sorted({r.symbol for r in seen})))
    old = data.draw(st.sampled_from(DAYS[:200]))
    fix = Row(symbol, old, 42.0, 43.0, 41.0, 42.5, 500.0, ingested=5)
    write_fragment(lake, [fix])
    seen.append(fix)
    build(lake)
    assert_equals_full_rebuild(lake, tmp, None)
    assert_gold_matches_pandas(lake, history_of(seen))
    # a new split of that symbol: recomputed from its first bar
    book = SplitAt(symbol=symbol, day=data.draw(st.sampled_from(DAYS[1:205])), ratio=4.0)
    assert gold.run(lake, workers=1, splits=book).ok
    assert_equals_full_rebuild(lake, tmp, book)
    assert_gold_matches_pandas(lake, history_of(seen, book))


# -- cases ---------------------------------------------------------------------------------------
def _rows(symbol: str, days: Sequence[dt.date], start: float = 10.0) -> list[Row]:
    rng = np.random.default_rng(sum(map(ord, symbol)))
    out, price = [], start
    for d in days:
        price *= float(np.exp(rng.normal(0, 0.02)))
        out.append(Row(symbol, d, price, price * 1.01, price * 0.98, price, 1000.0))
    return out


def _whole(lake: Lake, folder: str) -> pa.Table:
    """Every month file under ``folder``, by symbol and start date."""
    return pa.concat_tables(
        [pq.read_table(lake.path(e.key)) for e in lake.list(folder, suffix=".parquet")]
    ).sort_by([("symbol", "ascending"), ("start_date", "ascending")])


def test_a_daily_run_resumes_each_symbol_at_its_last_bar(local_lake: Lake) -> None:
    days = window(dt.date(2024, 1, 2), 260)
    rows = _rows("AAA", days[:250]) + _rows("BBB", days[:250]) + _rows("GONE", days[:40])
    for s in ("AAA", "BBB", "GONE"):
        write_fragment(local_lake, [r for r in rows if r.symbol == s])
    first = build(local_lake)
    assert first.full and first.symbols == 3
    # GONE trades again after months: its last row's month file stays as it is
    gone_month = local_lake.path(layout.gold_file("1d", days[39].year, days[39].month))
    before = Path(gone_month).stat()
    new = [Row(s, days[250], 30.0, 31.0, 29.0, 30.5, 10.0, ingested=1) for s in ("AAA", "BBB")]
    new.append(Row("GONE", days[250], 20.0, 21.0, 19.0, 20.5, 10.0, ingested=1))
    for r in new:
        write_fragment(local_lake, [r])
    daily = build(local_lake)
    one_day = {r.interval: r for r in daily.per_interval}
    assert not daily.full
    # each symbol resumes before its last bar, but only the new rows are written
    assert one_day["1d"].symbols_changed == 3 and one_day["1d"].bars == 3
    assert one_day["1d"].files_written == 1
    assert all(r.symbols_changed == 3 and r.bars <= 6 for r in daily.per_interval)
    after = Path(gone_month).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert_gold_matches_pandas(local_lake, history_of(rows + new))
    assert gold.run(local_lake, workers=1).per_interval[0].symbols_changed == 0  # nothing new


def test_gold_follows_silver_and_its_anchor(local_lake: Lake) -> None:
    days = window(dt.date(2023, 3, 1), 120)
    rows = _rows("AAA", days[::2]) + _rows("BBB", days[5:])
    for s in ("AAA", "BBB"):
        write_fragment(local_lake, [r for r in rows if r.symbol == s])
    build(local_lake)
    for n in (3, 34):
        silver = _whole(local_lake, layout.silver_dir(n))
        golden = _whole(local_lake, layout.gold_dir(f"{n}d"))
        for c in ("symbol", "start_date", "end_date", "complete", "close"):
            assert golden[c].to_pylist() == silver[c].to_pylist(), (n, c)
    assert resample.run(local_lake, workers=1, full=True, anchor="symbol").ok
    report = gold.run(local_lake, workers=1)
    assert {r.interval: r.full for r in report.per_interval} == {
        i: i != "1d" for i in GOLD_INTERVALS
    }
    state = gold_state.read(local_lake, "8d")
    assert state is not None and state.anchor == "symbol"
    with pytest.raises(gold.AnchorMismatch):
        assert resample.run(local_lake, workers=1, full=True, anchor="calendar").ok
        gold.run(local_lake, workers=1, symbols=["AAA"])


def test_shards_together_write_what_one_run_writes(local_lake: Lake, tmp_path: Path) -> None:
    days = window(dt.date(2022, 1, 3), 90)
    for k, s in enumerate(("AAA", "BBB", "CCC", "DDD", "EEE")):
        write_fragment(local_lake, _rows(s, days[k * 5 :]))
    assert consolidate.run(local_lake, workers=1).ok
    assert resample.run(local_lake, workers=1).ok
    whole = tmp_path / "whole"
    shutil.copytree(local_lake.root, whole)
    assert gold.run(Lake(f"file://{whole}"), workers=1).ok
    first = gold.run(local_lake, workers=1, shard=Shard(0, 2))
    assert all(r.staged and not r.merged for r in first.per_interval)
    assert not local_lake.list("gold")
    second = gold.run(local_lake, workers=1, shard=Shard(1, 2))
    assert all(r.merged for r in second.per_interval)
    assert snapshot(local_lake, "gold") == snapshot(Lake(f"file://{whole}"), "gold")
    assert not local_lake.list(gold.STAGING)


def test_an_unreadable_file_fails_its_symbol_only(local_lake: Lake) -> None:
    days = window(dt.date(2024, 2, 1), 30)
    for s in ("AAA", "BAD"):
        write_fragment(local_lake, _rows(s, days))
    assert consolidate.run(local_lake, workers=1).ok
    Path(local_lake.path(layout.consolidated("BAD"))).write_bytes(b"not parquet")
    report = gold.run(local_lake, workers=1)
    assert set(report.failed) == {"BAD"}
    assert sorted(read_gold(local_lake, "1d")) == ["AAA"]
    state = gold_state.read(local_lake, "1d")
    assert state is not None and "BAD" not in state.resume


def test_the_command_line(local_lake: Lake, capsys: pytest.CaptureFixture[str]) -> None:
    days = window(dt.date(2024, 2, 1), 30)
    write_fragment(local_lake, _rows("AAA", days))
    assert consolidate.run(local_lake, workers=1).ok
    assert gold.main(["--lake", local_lake.url, "--intervals", "1d,3", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "1d full: 1 symbols" in out and "3d full" in out and "5d" not in out
    assert not local_lake.list(layout.gold_dir("5d"))
    with pytest.raises(SystemExit) as usage:
        gold.main(["--lake", local_lake.url, "--intervals", "4d"])
    assert usage.value.code == 2
    assert "unsupported interval" in capsys.readouterr().err
    Path(local_lake.path(layout.consolidated("AAA"))).write_bytes(b"broken")
    assert gold.main(["--lake", local_lake.url, "--full", "--no-progress"]) == 1
    assert "FAILED AAA" in capsys.readouterr().err


def test_a_real_split_is_applied_as_silver_applies_it(local_lake: Lake, tmp_path: Path) -> None:
    from tests.unit.test_resample_splits import _write_splits

    days = window(dt.date(2024, 1, 2), 120)
    for s in ("AAA", "BBB"):
        write_fragment(local_lake, _rows(s, days))
    build(local_lake)
    before = read_gold(local_lake, "1d")["AAA"]["close"].to_pylist()
    _write_splits(local_lake, [("AAA", days[60], 1.0, 4.0)])  # 4-for-1
    assert resample.run(local_lake, workers=1).ok
    report = gold.run(local_lake, workers=1)
    assert {r.symbols_changed for r in report.per_interval} == {1}  # AAA only, from its first bar
    after = read_gold(local_lake, "1d")["AAA"]["close"].to_pylist()
    assert after[:60] == [c * 0.25 for c in before[:60]] and after[60:] == before[60:]
    for n in (3, 21):
        silver = _whole(local_lake, layout.silver_dir(n))
        golden = _whole(local_lake, layout.gold_dir(f"{n}d"))
        assert golden["close"].to_pylist() == silver["close"].to_pylist()
    assert_equals_full_rebuild(local_lake, tmp_path, None)
