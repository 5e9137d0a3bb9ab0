"""Pure parts of the replay: sessions, validation of grouped-daily payloads, bronze fragments."""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

import pyarrow as pa
import pytest

from core.bronze import BronzeError, BronzeWriter, fragments
from core.lake import Lake
from core.schemas import BRONZE_DAILY
from core.stores.ledger import SessionOutcome
from dataflows.connectors.grouped_daily import SessionSource, fetch_of, split_sessions
from dataflows.connectors.polygon import PolygonError, PolygonGateway, grouped_table
from dataflows.replay import parse_sessions
from dataflows.replay_report import ReplayReport
from dataflows.session_checks import ChunkEnd, Fetch, check_fetch

pytestmark = pytest.mark.unit
DAY = dt.date(2025, 3, 4)
NOW = dt.datetime(2025, 3, 5, tzinfo=dt.UTC)
T = 1741122000000  # 2025-03-04 16:00 New York


def row(sym: str = "AAPL", **over: Any) -> dict[str, Any]:
    r = {"T": sym, "o": 10.0, "h": 11.0, "l": 9.5, "c": 10.5, "v": 1000, "vw": 10.2345, "n": 7}
    r["t"] = T
    r.update(over)
    return r


def bronze(rows: list[tuple[str, dt.date]]) -> pa.Table:
    n = len(rows)
    return pa.table(
        {
            "symbol": [s for s, _ in rows],
            "date": [d for _, d in rows],
            "open": [1.0] * n,
            "high": [2.0] * n,
            "low": [0.5] * n,
            "close": [1.5] * n,
            "volume": [10.0] * n,
            "vwap": [None] * n,
            "transactions": [None] * n,
            "source": ["rest"] * n,
            "ingested_at": [NOW] * n,
        },
        schema=BRONZE_DAILY,
    )


def test_parse_sessions() -> None:
    assert parse_sessions("2025-03-04, 2025-03-03 2025-03-04") == [dt.date(2025, 3, 3), DAY]
    assert parse_sessions(None) == []
    with pytest.raises(ValueError, match="REPLAY_SESSIONS"):
        parse_sessions("2025-13-01")


def test_split_sessions_is_stable_and_complete() -> None:
    days = [DAY + dt.timedelta(days=i) for i in range(10)]
    parts = split_sessions(days, 3)
    assert list(parts) == ["sessions-0", "sessions-1", "sessions-2"]
    assert sorted(d for p in parts.values() for d in p) == days
    assert split_sessions([], 2) == {"sessions-0": [], "sessions-1": []}


def test_check_fetch_keeps_good_rows_and_quarantines_each_defect() -> None:
    results: list[Any] = [
        row("AAPL"),
        row("MSFT", c=None),
        row("NEG", o=-1.0),
        row("HL", h=9.0, l=9.6),
        row("WKND", t=T + 4 * 86_400_000),  # Saturday
        row("NEXT", t=T + 86_400_000),  # another session than the one asked for
        row("AAPL", c=10.6),  # duplicate symbol
        row("STR", o="ten"),
        row("bad$"),
        42,
    ]
    valid, rejected, outcome = check_fetch(fetch_of(DAY, results, 2, NOW))
    assert valid["symbol"].to_pylist() == ["AAPL"]
    assert valid.schema.equals(BRONZE_DAILY)
    assert valid["vwap"].to_pylist() == [10.2345]  # sub-penny survives as float64
    assert outcome.status == "complete" and outcome.rows == 1 and outcome.quarantined == 9
    assert outcome.attempts == 2
    reasons = dict(zip(rejected["symbol"].to_pylist(), rejected["reason"].to_pylist(), strict=True))
    assert "missing close" in reasons["MSFT"]
    assert "open is not a positive" in reasons["NEG"]
    assert "high < low" in reasons["HL"]
    assert "not an XNYS session" in reasons["WKND"]
    assert "not the requested session" in reasons["NEXT"]
    assert "duplicate symbol" in reasons["AAPL"]
    assert "missing open" in reasons["STR"]
    assert "invalid symbol" in reasons["bad$"]
    assert "not a JSON object" in reasons[None]


def test_check_fetch_outcomes_for_failures_and_empty_answers() -> None:
    _, _, failed = check_fetch(fetch_of(DAY, [], 6, NOW, "GET ... failed after 6 attempts"))
    assert failed.status == "failed" and failed.attempts == 6 and failed.error
    _, _, empty = check_fetch(fetch_of(DAY, [], 1, NOW))
    assert empty.status == "empty"
    _, rejected, all_bad = check_fetch(fetch_of(DAY, [row(o=-1.0)], 1, NOW))
    assert all_bad.status == "empty" and rejected.num_rows == 1  # never complete


def test_fragments_name_single_and_multi_session_files() -> None:
    d2 = DAY + dt.timedelta(days=1)
    frags = {f.symbol: f for f in fragments(bronze([("B", d2), ("A", DAY), ("B", DAY)]))}
    assert frags["A"].key == "bronze/raw_ohlcv/symbol=A/date=2025-03-04.parquet"
    assert frags["B"].key == "bronze/raw_ohlcv/symbol=B/range=2025-03-04_2025-03-05.parquet"
    assert frags["B"].table["date"].to_pylist() == [DAY, d2]
    with pytest.raises(BronzeError, match="duplicate"):
        list(fragments(bronze([("A", DAY), ("A", DAY)])))
    assert list(fragments(BRONZE_DAILY.empty_table())) == []


def test_bronze_writer_rewrites_the_same_keys(local_lake: Lake) -> None:
    t = bronze([(f"S{i}", DAY) for i in range(50)])
    with BronzeWriter(local_lake, concurrency=4) as w:
        first = w.write(t)
        second = w.write(t)
    assert first.files == second.files == 50 and first.rows == 50
    assert len(local_lake.list("bronze", suffix=".parquet")) == 50
    back = local_lake.read_table("bronze/raw_ohlcv/symbol=S7/date=2025-03-04.parquet")
    assert back.schema.equals(BRONZE_DAILY, check_metadata=False)


def test_report_summary_and_status() -> None:
    r = ReplayReport(requested=3)
    outcomes = (
        SessionOutcome(DAY, "complete", rows=5),
        SessionOutcome(DAY + dt.timedelta(days=1), "empty"),
        SessionOutcome(DAY + dt.timedelta(days=2), "failed", error="HTTP 500"),
    )
    r.add(outcomes, rows=1, files=1, db_rows=1)
    line = r.summary()
    assert "3/3 sessions fetched, 1 complete, 1 empty, 1 failed" in line
    assert "HTTP 500" in line and not r.ok


class _Gateway:
    """Answers grouped daily from a table (a stand-in for HTTP, not for a database)."""

    def __init__(self, answers: dict[dt.date, list[Any] | None]) -> None:
        self.answers = answers
        self.asked: list[dt.date] = []

    def grouped_daily_fetch(self, session: dt.date) -> tuple[list[Any], int]:
        self.asked.append(session)
        got = self.answers[session]
        if got is None:
            msg = "HTTP 500"
            raise PolygonError(msg, status=500, attempts=3)
        return got, 1

    def grouped_daily_table(self, session: dt.date) -> tuple[pa.Table, list[Any], int]:
        results, attempts = self.grouped_daily_fetch(session)
        table, junk = grouped_table(results)
        return table, junk, attempts


def test_source_resumes_after_done_sessions_and_keeps_failures_open() -> None:
    days = [DAY + dt.timedelta(days=i) for i in range(4)]
    gw = _Gateway({days[0]: [row()], days[1]: [], days[2]: None, days[3]: [row()]})
    source = SessionSource(days, cast(PolygonGateway, gw), chunk_sessions=2)
    part = source.build_part("s", "sessions-0", [days[0].isoformat()])
    items: list[Fetch | ChunkEnd] = []
    while True:
        try:
            items.extend(part.next_batch())
        except StopIteration:
            break
    part.close()
    assert sorted(gw.asked) == days[1:]  # the resumed state skipped the done session
    ends = [i for i in items if isinstance(i, ChunkEnd)]
    assert [e.sessions for e in ends] == [tuple(days[1:3]), (days[3],)]
    fetched = [i.session for i in items if isinstance(i, Fetch)]
    assert fetched == days[1:]  # in order, each before its chunk's end
    assert items.index(ends[0]) == 2
    assert part.snapshot() == [days[0].isoformat(), days[3].isoformat()]  # not empty/failed


def test_cli_help(capsys: pytest.CaptureFixture[str]) -> None:
    from dataflows.replay import main

    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "--start" in out and "--sessions" in out and "POLYGON_REST_URL" in out


def test_the_replay_hands_its_counts_to_the_pipeline(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from dataflows import replay

    report = ReplayReport(requested=3, rows=42, quarantined=1, files=2, db_rows=42)
    report.complete = [dt.date(2024, 1, 2), dt.date(2024, 1, 3)]
    report.empty = [dt.date(2024, 1, 4)]
    monkeypatch.setenv("BATCH_COUNTS_FILE", str(tmp_path / "counts.json"))
    monkeypatch.setattr(replay, "_EXIT_REPORTS", [report])
    replay._exit_status()
    counts = json.loads((tmp_path / "counts.json").read_text())
    assert counts["sessions_complete"] == 2 and counts["sessions_empty"] == 1
    assert counts["rows"] == 42 and counts["quarantined"] == 1
    assert "replay: 3/3 sessions fetched" in capsys.readouterr().err
