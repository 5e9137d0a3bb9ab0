"""Backfill's pure parts, and one symbol end to end over an in-memory page source."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa
import pytest

from core import layout
from core.lake import Lake
from core.schemas import BRONZE_DAILY, QUARANTINE
from dataflows import backfill
from dataflows.simulator.market import ny_midnight_ms

pytestmark = pytest.mark.unit


def agg(day: dt.date, price: float = 10.0, **over: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "t": ny_midnight_ms(day),
        "o": price,
        "h": price + 1,
        "l": price - 1,
        "c": price + 0.5,
        "v": 1000,
        "vw": price + 0.2,
        "n": 12,
    }
    row.update(over)
    return row


class Pages:
    """A paginated endpoint in memory: ``limit`` rows per page and an absolute next_url."""

    def __init__(self, rows: list[dict[str, Any]], limit: int) -> None:
        self.rows = rows
        self.limit = limit
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, path: str, params: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((path, dict(params)))
        offset = int(params.get("offset", 0))
        body: dict[str, Any] = {"results": self.rows[offset : offset + self.limit]}
        if offset + self.limit < len(self.rows):
            body["next_url"] = (
                f"https://elsewhere.example{path}?offset={offset + self.limit}&apiKey=leak"
            )
        return body


def test_split_next_url_keeps_the_path_and_drops_the_key() -> None:
    path, params = backfill.split_next_url(
        "https://api.polygon.io/v2/aggs/ticker/A/range/1/day/1/2?cursor=abc&apiKey=secret"
    )
    assert path == "/v2/aggs/ticker/A/range/1/day/1/2"
    assert params == {"cursor": "abc"}


def test_pages_follows_next_url_to_the_end_and_detects_loops() -> None:
    src = Pages([{"i": i} for i in range(23)], limit=5)
    got = [r["i"] for body in backfill.pages(src, "/p", {"limit": "5"}) for r in body["results"]]
    assert got == list(range(23))
    assert len(src.calls) == 5
    assert all("apiKey" not in params for _, params in src.calls)

    def loop(path: str, params: dict[str, Any]) -> dict[str, Any]:
        return {"results": [], "next_url": "http://h/p?cursor=same"}

    with pytest.raises(backfill.PaginationError, match="repeats"):
        list(backfill.pages(loop, "/p", {}))


def test_aggs_table_dates_and_odd_values() -> None:
    rows = [agg(dt.date(2024, 3, 8)), agg(dt.date(2024, 3, 11)), agg(dt.date(2024, 7, 3), o="x")]
    t = backfill.aggs_table("ABC", rows)
    assert t["date"].to_pylist() == [dt.date(2024, 3, 8), dt.date(2024, 3, 11), dt.date(2024, 7, 3)]
    assert t["open"].to_pylist() == [10.0, 10.0, None]
    assert t["transactions"].type == pa.int64()


def test_dedupe_sorted_keeps_the_last_row_of_a_date() -> None:
    t = pa.table(
        {"date": pa.array([dt.date(2024, 1, 3), dt.date(2024, 1, 2), dt.date(2024, 1, 3)]),
         "v": [1, 2, 3]}
    )  # fmt: skip
    out = backfill.dedupe_sorted(t)
    assert out["date"].to_pylist() == [dt.date(2024, 1, 2), dt.date(2024, 1, 3)]
    assert out["v"].to_pylist() == [2, 3]


def test_new_symbols_and_cache_cutoff() -> None:
    assert backfill.new_symbols(["B", "A", "C", "bad/"], ["C"]) == ["A", "B"]
    assert backfill.cache_cutoff(dt.date(2025, 1, 31), 31) == dt.date(2024, 12, 31)


def test_backfill_symbol_writes_one_range_file_and_quarantines(local_lake: Lake) -> None:
    days = [dt.date(2024, 1, 2) + dt.timedelta(days=i) for i in range(40)]
    sessions = [d for d in days if d.weekday() < 5 and d != dt.date(2024, 1, 15)]
    rows = [agg(d, 10 + i) for i, d in enumerate(sessions)]
    rows.append(agg(dt.date(2024, 1, 6)))  # a Saturday
    rows.append(agg(dt.date(2024, 1, 10), h=1.0))  # high < low
    src = Pages(rows, limit=7)
    res = backfill.backfill_symbol(src, local_lake, "ABC", days[0], days[-1], limit=7)
    assert res.error is None
    assert res.pages == len(src.calls) == -(-len(rows) // 7)
    assert res.fetched == len(rows)
    assert res.quarantined == 2
    assert res.key == layout.range_fragment("ABC", sessions[0], sessions[-1])
    files = [e.key for e in local_lake.list(layout.symbol_dir("ABC"))]
    assert files == [res.key]
    written = local_lake.read_table(res.key)
    assert written.schema == BRONZE_DAILY
    assert written.num_rows == len(sessions)  # the bad 2024-01-10 copy lost to the good one
    assert written["date"].to_pylist() == sessions
    [q] = local_lake.list("quarantine/backfill")
    rejected = local_lake.read_table(q.key)
    assert rejected.schema == QUARANTINE
    assert sorted(rejected["reason"].to_pylist()) == [
        "date is not an XNYS session",
        "high < low; open outside [low, high]; close outside [low, high]",
    ]


def test_backfill_symbol_reports_errors_without_the_key(local_lake: Lake) -> None:
    def failing(path: str, params: dict[str, Any]) -> dict[str, Any]:
        msg = "GET http://h/x?apiKey=pk_very_secret failed"
        raise RuntimeError(msg)

    res = backfill.backfill_symbol(
        failing, local_lake, "ABC", dt.date(2024, 1, 2), dt.date(2024, 2, 1)
    )
    assert res.error is not None and "pk_very_secret" not in res.error
    assert res.key is None and local_lake.list("") == []


def test_cli_help_and_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        backfill.main(["--help"])
    assert done.value.code == 0
    assert "--new" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        backfill.main(["--symbols", "A", "--start", "yesterday"])
    assert done.value.code == 2
