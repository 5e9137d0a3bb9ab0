"""Core contracts: calendar, layout, schemas, validation and the lake port on local disk."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core import calendar, layout
from core.lake import Lake, LakeError
from core.records import Bar
from core.schemas import BRONZE_DAILY, QUARANTINE
from core.validation import check_daily

pytestmark = pytest.mark.unit
NOW = dt.datetime(2025, 1, 10, 22, tzinfo=dt.UTC)


def test_session_index_counts_sessions_since_1962() -> None:
    assert calendar.session_index(dt.date(1962, 1, 2)) == 0
    assert calendar.session_index(dt.date(1962, 1, 3)) == 1
    # a non-session date gets the index of the next session
    assert calendar.session_index(dt.date(2025, 1, 11)) == calendar.session_index(
        dt.date(2025, 1, 13)
    )


@pytest.mark.parametrize("day", [dt.date(2025, 1, 9), dt.date(2018, 12, 5), dt.date(2024, 12, 25)])
def test_special_closures_are_not_sessions(day: dt.date) -> None:
    assert not calendar.is_session(day)


def test_settled_sessions_wait_for_close_plus_delay() -> None:
    half_day = dt.date(2026, 11, 27)  # closes 13:00 New York = 18:00 UTC
    before = dt.datetime(2026, 11, 27, 18, 30, tzinfo=dt.UTC)
    after = dt.datetime(2026, 11, 27, 19, 1, tzinfo=dt.UTC)
    settle = dt.timedelta(hours=1)
    assert half_day not in calendar.settled_sessions(half_day, half_day, before, settle)
    assert calendar.settled_sessions(half_day, half_day, after, settle) == [half_day]


def test_layout_paths_match_contract() -> None:
    d = dt.date(2025, 1, 8)
    assert (
        layout.daily_fragment("AAPL", d) == "bronze/raw_ohlcv/symbol=AAPL/date=2025-01-08.parquet"
    )
    assert (
        layout.range_fragment("AAPL", d, dt.date(2025, 2, 3))
        == "bronze/raw_ohlcv/symbol=AAPL/range=2025-01-08_2025-02-03.parquet"
    )
    assert (
        layout.silver_file(8, 2025, 3)
        == "silver/silver_8d/year=2025/month=03/data_8d_202503.parquet"
    )
    assert layout.parse_fragment(layout.range_fragment("BRK.B", d, d)) == ("BRK.B", d, d)
    with pytest.raises(layout.LayoutError):
        layout.daily_fragment("../etc", d)


def test_validation_splits_and_explains() -> None:
    raw = pa.table(
        {
            "symbol": ["AAPL", "MSFT", "IBM", "GE", "F"],
            "date": [
                dt.date(2025, 1, 8),
                dt.date(2025, 1, 9),
                dt.date(2025, 1, 8),
                dt.date(2025, 1, 8),
                dt.date(2025, 1, 8),
            ],
            "open": [10.0, 10.0, -1.0, 10.0, 10.0],
            "high": [11.0, 11.0, 11.0, 9.0, 11.0],
            "low": [9.0, 9.0, 9.0, 10.0, 9.0],
            "close": [10.5, 10.5, 10.5, 10.0, None],
            "volume": [100.0, 100.0, 100.0, 100.0, 100.0],
        }
    )
    checked = check_daily(raw, source="rest", received_at=NOW)
    assert checked.valid["symbol"].to_pylist() == ["AAPL"]
    assert checked.valid.schema == BRONZE_DAILY
    assert checked.rejected.schema == QUARANTINE
    reasons = dict(
        zip(
            checked.rejected["symbol"].to_pylist(),
            checked.rejected["reason"].to_pylist(),
            strict=True,
        )
    )
    assert "not an XNYS session" in reasons["MSFT"]
    assert "open is not a positive" in reasons["IBM"]
    assert "high < low" in reasons["GE"]
    assert "missing close" in reasons["F"]


def test_bar_record_rejects_bad_shapes() -> None:
    Bar(symbol="AAPL", date=dt.date(2025, 1, 8), open=1, high=2, low=1, close=2, volume=0)
    with pytest.raises(ValueError, match="high"):
        Bar(symbol="AAPL", date=dt.date(2025, 1, 8), open=1, high=1, low=2, close=2, volume=0)
    with pytest.raises(ValueError, match="session"):
        Bar(symbol="AAPL", date=dt.date(2025, 1, 11), open=1, high=2, low=1, close=2, volume=0)


def test_local_lake_round_trip_is_atomic(local_lake: Lake) -> None:
    t = pa.table({"x": [1, 2, 3]})
    key = "a/b/c.parquet"
    assert local_lake.write_table(key, t) > 0
    assert local_lake.read_table(key).equals(t)
    assert [e.key for e in local_lake.list("a")] == [key]
    local_lake.write_json("m/x.json", {"b": 1, "a": 2})
    assert local_lake.read_json("m/x.json") == {"a": 2, "b": 1}
    local_lake.delete(key)
    local_lake.delete(key)  # idempotent
    assert not local_lake.exists(key)


def test_local_lake_writes_replace_whole_files_and_leave_no_temporaries(local_lake: Lake) -> None:
    key = "bronze/raw_ohlcv/symbol=NEW/data.parquet"  # its directory does not exist yet
    size = local_lake.write_parquet(key, pa.table({"x": [1, 2, 3]}))
    path = Path(local_lake.path(key))
    assert size == path.stat().st_size
    with path.open("rb") as reader:  # a reader of the old file keeps the old file whole
        local_lake.write_bytes(key, b"new")
        assert reader.read(4) == b"PAR1"
    assert local_lake.read_bytes(key) == b"new"

    class Boom(RuntimeError):
        pass

    broken = pa.table({"x": [1]})
    with pytest.raises(Boom), local_lake._sink(key) as sink:
        pq.write_table(broken, sink)
        raise Boom
    assert local_lake.read_bytes(key) == b"new"  # a failed write changes nothing
    assert sorted(p.name for p in path.parent.iterdir()) == ["data.parquet"]
    assert local_lake.exists(key) and not local_lake.exists("bronze/raw_ohlcv/symbol=NEW")
    with pytest.raises(LakeError, match="cannot read"):
        local_lake.read_table("bronze/missing.parquet")


def test_an_empty_variable_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    from core.settings import BatchSettings

    monkeypatch.setenv("DATABASE_URL", "")
    assert BatchSettings().database_url is None


def test_a_quarantine_key_never_leaves_its_folder() -> None:
    from core import quarantine

    rows = pa.table({"payload": ["{}"]})
    key = quarantine.key_of("export", dt.date(2024, 1, 2), "X/../../escapee", rows)
    assert key.startswith("quarantine/export/2024-01-02/part-invalid-") and key.count("/") == 3
    with pytest.raises(layout.LayoutError):
        layout.quarantine_part("export", dt.date(2024, 1, 2), "../x")
