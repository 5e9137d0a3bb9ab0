"""Contract review: awkward grouped-daily rows through the replay's validation and writer."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow.parquet as pq
import pytest

from batch import consolidate
from core import layout
from core.bronze import BronzeWriter
from core.lake import Lake
from core.schemas import BRONZE_DAILY, QUARANTINE
from dataflows.connectors.grouped_daily import fetch_of
from dataflows.session_checks import check_fetch

pytestmark = pytest.mark.unit
DAY = dt.date(2025, 3, 4)
NOW = dt.datetime(2025, 3, 5, tzinfo=dt.UTC)
T = 1741122000000  # 2025-03-04 16:00 New York


def row(sym: str | None = "AAPL", **over: Any) -> dict[str, Any]:
    r: dict[str, Any] = {"o": 10.0, "h": 11.0, "l": 9.5, "c": 10.5, "v": 1000, "vw": 10.1, "n": 7}
    if sym is not None:
        r["T"] = sym
    r["t"] = T
    r.update(over)
    return r


def test_nullable_fields_flat_bars_and_zero_volume_are_kept() -> None:
    no_n = row("NON")
    del no_n["n"]
    no_vw = row("NOVW")
    del no_vw["vw"]
    results = [
        no_n,
        no_vw,
        row("NULLVW", vw=None, n=None),
        row("ZERO", v=0),
        row("FLAT", o=5.0, h=5.0, l=5.0, c=5.0),
        row("BRK.B"),
        row("BF-A", n=3.0),  # an integral float count is still an int64
    ]
    valid, rejected, outcome = check_fetch(fetch_of(DAY, results, 1, NOW))
    assert valid.schema.equals(BRONZE_DAILY)
    assert rejected.num_rows == 0, rejected["reason"].to_pylist()
    got = {r["symbol"]: r for r in valid.to_pylist()}
    assert set(got) == {"NON", "NOVW", "NULLVW", "ZERO", "FLAT", "BRK.B", "BF-A"}
    assert got["NON"]["transactions"] is None and got["NOVW"]["vwap"] is None
    assert got["NULLVW"]["vwap"] is None and got["NULLVW"]["transactions"] is None
    assert got["ZERO"]["volume"] == 0.0
    assert got["BF-A"]["transactions"] == 3
    assert {r["date"] for r in got.values()} == {DAY}
    assert {r["source"] for r in got.values()} == {"rest"}
    assert outcome.status == "complete" and outcome.rows == 7


def test_a_row_without_ticker_or_time_is_quarantined_with_a_reason() -> None:
    no_t = row("NOTIME")
    del no_t["t"]
    results = [row("AAPL"), row(None), no_t]
    valid, rejected, _ = check_fetch(fetch_of(DAY, results, 1, NOW))
    assert valid["symbol"].to_pylist() == ["AAPL"]
    assert rejected.schema.equals(QUARANTINE)
    reasons = rejected["reason"].to_pylist()
    assert len(reasons) == 2 and all(reasons)
    assert any("symbol" in r for r in reasons)
    assert any("date" in r for r in reasons)


def test_duplicates_of_a_symbol_keep_one_row_and_quarantine_the_rest() -> None:
    results = [row("DUP", c=10.5), row("DUP", c=10.7), row("DUP", c=10.5)]
    valid, rejected, _ = check_fetch(fetch_of(DAY, results, 1, NOW))
    assert valid["symbol"].to_pylist() == ["DUP"]
    assert rejected.num_rows == 2
    assert all("duplicate" in r for r in rejected["reason"].to_pylist())


def test_awkward_valid_rows_are_written_and_consolidated_as_the_contract_says(
    local_lake: Lake,
) -> None:
    nulls = row("NULLS", vw=None)
    del nulls["n"]
    results = [nulls, row("ZERO", v=0), row("FLAT", o=5.0, h=5.0, l=5.0, c=5.0), row("BRK.B")]
    valid, _, _ = check_fetch(fetch_of(DAY, results, 1, NOW))
    with BronzeWriter(local_lake) as w:
        w.write(valid)
    assert {e.key for e in local_lake.list("bronze")} == {
        layout.daily_fragment(s, DAY) for s in ("NULLS", "ZERO", "FLAT", "BRK.B")
    }
    assert consolidate.run(local_lake, workers=1).ok
    t = pq.read_table(local_lake.path(layout.consolidated("NULLS")))
    assert t.schema.remove_metadata().equals(BRONZE_DAILY)
    assert t.select(["vwap", "transactions", "source"]).to_pylist() == [
        {"vwap": None, "transactions": None, "source": "rest"}
    ]
    assert t["ingested_at"].to_pylist() == [NOW]
    assert pq.read_table(local_lake.path(layout.consolidated("ZERO")))["volume"].to_pylist() == [
        0.0
    ]


def test_polygon_preferred_tickers_are_kept() -> None:
    valid, rejected, _ = check_fetch(fetch_of(DAY, [row("BCpC"), row("BCPC")], 1, NOW))
    assert rejected.num_rows == 0, rejected["reason"].to_pylist()
    assert sorted(valid["symbol"].to_pylist()) == ["BCPC", "BCpC"]


def test_user_input_is_upper_cased_only_when_all_lower_case() -> None:
    assert layout.normalise_symbol(" aapl ") == "AAPL"
    assert layout.normalise_symbol("BCpC") == "BCpC"
    assert layout.normalise_symbol("brk.b") == "BRK.B"
