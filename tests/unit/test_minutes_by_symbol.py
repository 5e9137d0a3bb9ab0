"""Per-symbol month files of minutes: the 1m API answers what the session files hold, always."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from api import intraday as api_intraday
from batch import consolidate
from batch.engine import minutes
from batch.engine import minutes_by_symbol as by_symbol
from core import layout, minutes_by_symbol
from core.calendar import NEW_YORK
from core.lake import Lake
from tests.unit.test_intraday import at, minute_table

pytestmark = pytest.mark.unit
NOV = [dt.date(2024, 11, 26), dt.date(2024, 11, 27), dt.date(2024, 11, 29)]  # 29th: a half day
DEC = [dt.date(2024, 12, 2), dt.date(2024, 12, 3), dt.date(2024, 12, 4)]
LATER = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)  # every session consolidated and old
COLS = ["start", "open", "high", "low", "close", "volume", "vwap", "trades",
        "source", "revision", "partial"]  # fmt: skip


def rows(symbol: str, day: dt.date, minutes_: range, price: float = 10.0) -> list[Any]:
    return [(symbol, at(day, 9, 30) + dt.timedelta(minutes=m), price + m / 100, 100.0, None, 2)
            for m in minutes_]  # fmt: skip


def frag(lake: Lake, day: dt.date, part: str, data: list[Any], **columns: Any) -> None:
    table = minute_table(data)
    for name, value in columns.items():
        field = table.schema.field(name)
        table = table.set_column(
            table.schema.get_field_index(name), field, pa.array([value] * len(data), field.type)
        )
    lake.write_table(layout.minute_fragment(day, part), table)


def market(lake: Lake) -> None:
    """AAPL every session; MSFT none on Nov 27 (halted); NEWCO listed on Dec 3."""
    for day in NOV + DEC:
        data = rows("AAPL", day, range(0, 210, 3))
        if day != NOV[1]:
            data += rows("MSFT", day, range(1, 200, 5), 300.0)
        if day >= DEC[1]:
            data += rows("NEWCO", day, range(10, 60), 5.0)
        frag(lake, day, "live1", data)


def truth(lake: Lake, symbol: str, start: Any, end: Any) -> list[dict[str, Any]]:
    """What the session files hold for ``symbol``, the plain way: whole files, then filter."""
    first = start.astimezone(NEW_YORK).date() if isinstance(start, dt.datetime) else start
    last = end.astimezone(NEW_YORK).date() if isinstance(end, dt.datetime) else end
    parts = [lake.read_table(layout.minute_consolidated(d)) for d in minutes.sessions(lake)
             if first <= d <= last and lake.exists(layout.minute_consolidated(d))]  # fmt: skip
    if not parts:
        return []
    t = pa.concat_tables(parts).filter(pc.field("symbol") == symbol).sort_by("start")
    if isinstance(start, dt.datetime):
        t = t.filter(pc.field("start") >= start)
    if isinstance(end, dt.datetime):
        t = t.filter(pc.field("start") <= end)
    out: list[dict[str, Any]] = t.select(COLS).to_pylist()
    return out


def served(lake: Lake, symbol: str, start: Any, end: Any) -> list[dict[str, Any]]:
    t = api_intraday.read_table(lake, symbol, "1m", start, end, None, now=LATER)
    out: list[dict[str, Any]] = t.select(COLS).to_pylist()
    return out


def elsewhere(lake: Lake, symbol: str) -> list[dt.date]:
    """Sessions the month files could not vouch for (read from the session files)."""
    files = by_symbol.consolidated(lake)
    return minutes_by_symbol.read_symbol(lake, symbol, files, COLS)[1]


RANGES = [
    (NOV[0], DEC[-1]),
    (NOV[2], NOV[2]),
    (at(NOV[0], 10, 0), at(DEC[1], 10, 0)),  # RFC 3339 times, mid-session at both ends
    (at(NOV[2], 9, 45), at(NOV[2], 12, 59)),
    (NOV[1], at(DEC[0], 9, 31)),
]


def check(lake: Lake) -> None:
    for symbol in ("AAPL", "MSFT", "NEWCO", "NOPE"):
        for start, end in RANGES:
            assert served(lake, symbol, start, end) == truth(lake, symbol, start, end), (
                symbol, start, end)  # fmt: skip


def derived(lake: Lake) -> dict[str, bytes]:
    entries = lake.list(layout.MINUTE_BY_SYMBOL)
    return {e.key: lake.read_bytes(e.key) for e in entries}


def test_a_year_is_read_from_month_files_equal_to_the_sessions(local_lake: Lake) -> None:
    market(local_lake)
    minutes.run(local_lake)
    report = by_symbol.run(local_lake)
    assert (report.built, report.files, report.failed) == (2, 5, {})  # NEWCO: December only
    assert local_lake.exists(layout.minute_month_file("NEWCO", 2024, 12))
    assert not local_lake.exists(layout.minute_month_file("NEWCO", 2024, 11))
    check(local_lake)
    # nothing read from session files: NEWCO's November and an unknown symbol by the records
    for symbol in ("AAPL", "MSFT", "NEWCO", "NOPE"):
        assert elsewhere(local_lake, symbol) == []
    assert [len(served(local_lake, "MSFT", d, d)) for d in NOV] == [40, 0, 40]  # halted day
    assert served(local_lake, "NEWCO", NOV[0], DEC[1])[0]["start"] == at(DEC[1], 9, 40)


def test_sessions_changed_after_the_build_are_read_from_their_files(local_lake: Lake) -> None:
    market(local_lake)
    minutes.run(local_lake)
    by_symbol.run(local_lake)
    # a revision, a healed minute (rest) and a healed missing session, consolidated only
    revised = rows("AAPL", DEC[1], range(3, 4), 99.0)
    frag(local_lake, DEC[1], "live2", revised, revision=1)
    frag(local_lake, NOV[0], "rest-heal", rows("MSFT", NOV[0], range(2, 3), 301.0), source="rest")
    gap = dt.date(2024, 11, 25)
    frag(local_lake, gap, "rest-gap", rows("AAPL", gap, range(0, 390, 7)), source="rest")
    minutes.run(local_lake)
    assert elsewhere(local_lake, "AAPL") == [gap, NOV[0], DEC[1]]
    assert elsewhere(local_lake, "MSFT") == [gap, NOV[0], DEC[1]]
    check(local_lake)
    aapl = {r["start"]: r for r in served(local_lake, "AAPL", DEC[1], DEC[1])}
    assert (aapl[at(DEC[1], 9, 33)]["close"], aapl[at(DEC[1], 9, 33)]["revision"]) == (99.28, 1)
    assert served(local_lake, "AAPL", gap, gap)[0]["source"] == "rest"
    report = by_symbol.run(local_lake)
    assert (report.built, report.unchanged) == (2, 0)
    assert elsewhere(local_lake, "AAPL") == []
    check(local_lake)


def test_reruns_give_the_same_bytes_and_a_killed_build_never_serves_stale(
    local_lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    market(local_lake)
    minutes.run(local_lake)
    by_symbol.run(local_lake)
    first = derived(local_lake)
    assert by_symbol.run(local_lake).unchanged == 2
    local_lake.delete(layout.minute_month_record(2024, 12))
    assert by_symbol.run(local_lake).built == 1
    assert derived(local_lake) == first  # rebuilt to the same bytes
    frag(local_lake, DEC[0], "live2", rows("MSFT", DEC[0], range(300, 310), 302.0))
    minutes.run(local_lake)
    written: list[str] = []

    def killed(lake: Lake, symbol: str, *args: Any) -> int:
        if written:
            msg = "killed"
            raise OSError(msg)
        written.append(symbol)
        return real(lake, symbol, *args)

    real = by_symbol.write_file
    monkeypatch.setattr(by_symbol, "write_file", killed)
    report = by_symbol.run(local_lake)
    assert list(report.failed) == ["2024-12"] and written == ["AAPL"]
    check(local_lake)  # AAPL's new file, MSFT's old one, the old record: all still true
    assert elsewhere(local_lake, "MSFT") == [DEC[0]] and elsewhere(local_lake, "AAPL") == []
    monkeypatch.setattr(by_symbol, "write_file", real)
    assert by_symbol.run(local_lake).built == 1
    after = derived(local_lake)
    local_lake.delete_prefix(layout.MINUTE_BY_SYMBOL)
    by_symbol.run(local_lake)
    assert derived(local_lake) == after
    check(local_lake)


def test_recent_sessions_merge_live_fragments(local_lake: Lake) -> None:
    market(local_lake)
    minutes.run(local_lake)
    by_symbol.run(local_lake)
    today = dt.date(2024, 12, 5)
    frag(local_lake, today, "live1", rows("AAPL", today, range(5)))
    frag(local_lake, DEC[2], "live2", rows("AAPL", DEC[2], range(300, 302), 50.0))
    now = at(today, 9, 40)
    t = api_intraday.read_table(local_lake, "AAPL", "1m", NOV[0], today, None, now=now)
    starts = t["start"].to_pylist()
    assert starts == sorted(starts) and len(starts) == 70 * 6 + 2 + 5
    assert starts[-1] == at(today, 9, 34) and at(DEC[2], 14, 31) in starts


def test_months_whose_sessions_are_gone_are_removed(local_lake: Lake) -> None:
    market(local_lake)
    minutes.run(local_lake)
    by_symbol.run(local_lake)
    for d in NOV:
        local_lake.delete_prefix(layout.minute_dir(d))
    report = by_symbol.run(local_lake)
    assert (report.built, report.unchanged) == (1, 1)
    assert local_lake.list_dirs(layout.MINUTE_BY_SYMBOL) == ["month=2024-12"]
    check(local_lake)


def test_consolidate_minutes_keeps_them(
    local_lake: Lake, capsys: pytest.CaptureFixture[str]
) -> None:
    market(local_lake)
    assert consolidate.main(["--minutes", "--lake", local_lake.url, "--no-progress"]) == 0
    assert "minutes by symbol: 2 months (2 rebuilt" in capsys.readouterr().out
    assert local_lake.exists(layout.minute_month_record(2024, 11))
    local_lake.delete(layout.minute_month_record(2024, 11))
    before = derived(local_lake)
    assert consolidate.main(["--minutes", "--dry-run", "--lake", local_lake.url]) == 0
    assert "2 months (1 rebuilt, 1 unchanged" in capsys.readouterr().out
    assert derived(local_lake) == before  # a dry run writes nothing
    check(local_lake)


def test_symbol_chunks_hold_whole_symbols() -> None:
    counts = {"A": 5, "B": 1, "C": 7, "D": 2}
    assert by_symbol.symbol_chunks(counts, rows=6) == [("A", "B"), ("C", "C"), ("D", "D")]
    assert by_symbol.symbol_chunks({}, rows=6) == []


def test_sources_round_trip_and_hold_only_unchanged_sessions() -> None:
    sources = {NOV[0]: (10, 5), NOV[1]: (11, 6)}
    assert minutes_by_symbol.decode_sources(minutes_by_symbol.encode_sources(sources)) == sources
    now = {NOV[0]: (10, 5), NOV[1]: (11, 7), NOV[2]: (12, 8)}
    assert minutes_by_symbol.held(sources, now) == {NOV[0]}
    record = minutes_by_symbol.MonthRecord(sources, frozenset({"B", "A"}))
    assert minutes_by_symbol.MonthRecord.from_json(record.to_json()) == record
    assert dataclasses.asdict(record)["symbols"] == frozenset({"A", "B"})


def test_a_damaged_month_file_costs_speed_not_answers(local_lake: Lake) -> None:
    market(local_lake)
    frag(local_lake, DEC[0], "odd", rows("lower", DEC[0], range(3)))  # not a lake file name
    minutes.run(local_lake)
    report = by_symbol.run(local_lake)
    assert report.failed == {} and report.files == 5
    local_lake.write_bytes(layout.minute_month_file("AAPL", 2024, 12), b"PAR1 not parquet")
    assert elsewhere(local_lake, "AAPL") == DEC
    check(local_lake)
