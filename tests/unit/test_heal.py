"""dataflows.heal, the pure parts: which requests heal which gaps, and what a REST row may be."""

from __future__ import annotations

import datetime as dt

import pytest

from core.stores.gaps import GapRow
from dataflows.heal import main, plan, rest_bars, to_ms

pytestmark = pytest.mark.unit
OPEN = dt.datetime(2025, 1, 3, 14, 30, tzinfo=dt.UTC)  # 09:30 New York, a Friday


def gap(gid: int, symbol: str | None, start: dt.datetime, minutes: int) -> GapRow:
    return GapRow(gid, symbol, start, start + dt.timedelta(minutes=minutes), "reconnect")


def test_gaps_become_one_request_per_symbol_and_session_keeping_only_their_minutes() -> None:
    gaps = [
        gap(1, None, OPEN, 2),
        gap(2, None, OPEN + dt.timedelta(minutes=30), 1),
        gap(3, "ZZZ", OPEN + dt.timedelta(seconds=90), 1),  # not on the minute: widened
    ]
    fetches = plan(gaps, lambda day: ["AAA", "BBB"])
    assert [(f.symbol, f.day) for f in fetches] == [
        ("AAA", dt.date(2025, 1, 3)),
        ("BBB", dt.date(2025, 1, 3)),
        ("ZZZ", dt.date(2025, 1, 3)),
    ]
    aaa, _, zzz = fetches
    assert (aaa.lo, aaa.hi, aaa.gap_ids) == (to_ms(OPEN), to_ms(OPEN) + 31 * 60_000, (1, 2))
    assert aaa.covers(to_ms(OPEN) + 60_000) and not aaa.covers(to_ms(OPEN) + 10 * 60_000)
    assert (zzz.lo, zzz.hi) == (to_ms(OPEN) + 60_000, to_ms(OPEN) + 3 * 60_000)
    assert plan(gaps, lambda day: ["AAA"], only=frozenset({"ZZZ"})) == [zzz]


def test_a_gap_over_a_weekend_asks_only_for_the_sessions() -> None:
    friday_close = dt.datetime(2025, 1, 3, 20, 50, tzinfo=dt.UTC)
    monday = dt.datetime(2025, 1, 6, 14, 35, tzinfo=dt.UTC)
    row = GapRow(7, "AAA", friday_close, monday, "reconnect")
    days = [f.day for f in plan([row], lambda day: [])]
    assert days == [dt.date(2025, 1, 3), dt.date(2025, 1, 6)]


def test_rest_rows_that_break_the_contract_are_rejected_with_a_reason() -> None:
    t = to_ms(OPEN)
    good = {"t": t, "o": 10.0, "h": 11.0, "l": 9.5, "c": 10.5, "v": 300, "vw": 10.2, "n": 3}
    rows = [
        good,
        {**good, "t": t + 1},
        {**good, "h": 10.2},
        {**good, "v": -1},
        {**good, "o": None},
        {**good, "t": t + 600_000},
        "junk",
    ]
    bars, rejects = rest_bars("AAA", rows, t, t + 300_000, received_at=t)
    assert len(bars) == 1 and bars[0].final and not bars[0].partial and bars[0].revision == 0
    assert (bars[0].volume, bars[0].trades, bars[0].vwap) == (300.0, 3, 10.2)
    assert [r.reason for r in rejects] == [
        "t: missing or not on the minute",
        "high/low do not bound open and close",
        "v: missing, not a number or negative",
        "o/h/l/c: missing, not a number or not positive",
        "t: outside the requested span",
        "result is not an object",
    ]


def test_cli_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--since", "yesterday"], ["--symbols", ","], ["--symbols", "a/b"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
    assert "invalid --since 'yesterday'" in capsys.readouterr().err
