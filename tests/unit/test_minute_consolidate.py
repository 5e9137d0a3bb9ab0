"""``batch.consolidate --minutes``: session fragments to one data.parquet under the precedence rule."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pyarrow.parquet as pq
import pytest

from batch import consolidate
from batch.engine import minutes
from core.lake import Lake
from core.layout import minute_consolidated
from dataflows.connectors.minute_sink import write_fragments
from dataflows.minute_fold import MinuteBar

pytestmark = pytest.mark.unit
DAY = dt.date(2025, 1, 2)
MS = int(dt.datetime(2025, 1, 2, 14, 30, tzinfo=dt.UTC).timestamp() * 1000)


def bar(minute: int, close: float, sym: str = "AAPL", **kw: object) -> MinuteBar:
    b = MinuteBar(sym, MS + minute * 60_000, 10.0, max(10.0, close), min(10.0, close), close,
                  100.0, 10.0, 2, True, 0, False)  # fmt: skip
    return dataclasses.replace(b, **kw)  # type: ignore[arg-type]


def merged(lake: Lake) -> dict[tuple[str, int], tuple[float, str, int, bool]]:
    t = lake.read_table(minute_consolidated(DAY))
    out = {}
    for r in t.to_pylist():
        key = (r["symbol"], (int(r["start"].timestamp() * 1000) - MS) // 60_000)
        out[key] = (r["close"], r["source"], r["revision"], r["partial"])
    return out


def test_precedence_per_minute(local_lake: Lake) -> None:
    write_fragments(local_lake, [bar(0, 11), bar(1, 11), bar(2, 11), bar(3, 11, partial=True)])
    write_fragments(local_lake, [bar(0, 12, revision=1), bar(1, 13, revision=4, partial=True)])
    write_fragments(local_lake, [bar(2, 14)], source="rest")
    write_fragments(local_lake, [bar(3, 15, revision=2, partial=True), bar(0, 9, sym="MSFT")])
    assert consolidate.main(["--minutes", "--lake", local_lake.url, "--no-progress"]) == 0
    assert merged(local_lake) == {
        ("AAPL", 0): (12, "live", 1, False),  # the higher revision
        ("AAPL", 1): (11, "live", 0, False),  # a partial bar never replaces a complete one
        ("AAPL", 2): (14, "rest", 0, False),  # rest beats live
        ("AAPL", 3): (15, "live", 2, True),  # among partial bars, the higher revision
        ("MSFT", 0): (9, "live", 0, False),
    }
    t = local_lake.read_table(minute_consolidated(DAY))
    assert t.column_names[:3] == ["symbol", "date", "start"]
    report = minutes.run(local_lake)
    assert (report.merged, report.skipped) == (0, 1)  # nothing new: nothing rewritten
    write_fragments(local_lake, [bar(1, 16, revision=5)])
    assert minutes.run(local_lake).merged == 1
    assert merged(local_lake)[("AAPL", 1)] == (16, "live", 5, False)


def test_one_symbols_day_is_read_by_pruning(local_lake: Lake) -> None:
    bars = [bar(m, 10 + m / 100, sym=f"S{k:03d}") for k in range(130) for m in range(390)]
    write_fragments(local_lake, bars)
    minutes.run(local_lake)
    meta = pq.ParquetFile(local_lake.path(minute_consolidated(DAY))).metadata
    assert meta.num_row_groups > 5
    one = minutes.read_symbol_day(local_lake, DAY, "S031")
    assert one.num_rows == 390 and set(one["symbol"].to_pylist()) == {"S031"}
    assert one["start"].to_pylist() == sorted(one["start"].to_pylist())


def test_help_and_bad_sessions(local_lake: Lake, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ex:
        consolidate.main(["--help"])
    assert ex.value.code == 0 and "--minutes" in capsys.readouterr().out
    write_fragments(local_lake, [bar(0, 11)])
    with pytest.raises(SystemExit) as ex:
        consolidate.main(["--minutes", "--sessions", "2025-13-01", "--lake", local_lake.url])
    assert ex.value.code == 2
