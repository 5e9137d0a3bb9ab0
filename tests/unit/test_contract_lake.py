"""Contract review: lake URLs and hand-written fragments that stretch the bronze schema."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch import consolidate
from core import calendar, layout
from core.lake import Lake, LakeError
from core.schemas import BRONZE_DAILY
from tests.batch_support import sessions

pytestmark = pytest.mark.unit
NOW = dt.datetime(2025, 3, 20, tzinfo=dt.UTC)


def _days(count: int) -> list[dt.date]:
    i = calendar.session_index(dt.date(2025, 3, 3))
    return sessions()[i : i + count]


def _fragment(day: dt.date, **cols: pa.Array) -> pa.Table:
    base: dict[str, pa.Array] = {
        "symbol": pa.array(["W"]),
        "date": pa.array([day], pa.date32()),
        "open": pa.array([1.0]),
        "high": pa.array([2.0]),
        "low": pa.array([0.5]),
        "close": pa.array([1.5]),
        "volume": pa.array([100.0]),
        "vwap": pa.array([1.2]),
        "transactions": pa.array([3], pa.int64()),
        "source": pa.array(["rest"]),
        "ingested_at": pa.array([NOW], pa.timestamp("us", tz="UTC")),
    }
    base.update(cols)
    return pa.table(base)


def test_lake_url_forms_name_the_same_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "lake"
    monkeypatch.chdir(tmp_path)
    forms = [root.as_uri(), str(root), "lake", "./lake"]
    assert {Lake(f).root for f in forms} == {str(root)}
    assert Lake("s3://bucket").root == "bucket"
    assert Lake("s3://bucket/pre/fix/").root == "bucket/pre/fix"
    for bad in ("s3:///nobucket", "http://x/y"):
        with pytest.raises(LakeError):
            Lake(bad)


def test_a_file_url_is_percent_decoded(tmp_path: Path) -> None:
    root = tmp_path / "my lake"
    lake = Lake(root.as_uri())
    assert lake.root == str(root)
    assert Lake(lake.url).root == str(root)


def test_consolidate_conforms_loosely_typed_fragments(local_lake: Lake) -> None:
    days = _days(5)
    variants = [
        {"volume": pa.array([100], pa.int64())},
        {"transactions": pa.array([3], pa.int32())},
        {"ingested_at": pa.array([NOW], pa.timestamp("ns", tz="UTC"))},
        {"ingested_at": pa.array([NOW], pa.timestamp("ms", tz="UTC"))},
        {"vwap": pa.array([None], pa.float64()), "transactions": pa.array([None], pa.int64())},
    ]
    for day, cols in zip(days, variants, strict=True):
        local_lake.write_table(layout.daily_fragment("W", day), _fragment(day, **cols))
    assert consolidate.run(local_lake, workers=1).ok
    t = pq.read_table(local_lake.path(layout.consolidated("W")))
    assert t.schema.remove_metadata().equals(BRONZE_DAILY)
    assert t["date"].to_pylist() == days
    assert t["ingested_at"].to_pylist() == [NOW] * 5


def test_a_fragment_without_the_nullable_columns_is_merged(local_lake: Lake) -> None:
    (day,) = _days(1)
    t = _fragment(day).drop_columns(["vwap", "transactions"])
    local_lake.write_table(layout.daily_fragment("W", day), t)
    assert consolidate.run(local_lake, workers=1).ok
    merged = pq.read_table(local_lake.path(layout.consolidated("W")))
    assert merged["vwap"].to_pylist() == [None]


def test_no_stray_files_outside_the_contract_paths(local_lake: Lake) -> None:
    days = _days(3)
    for day in days:
        local_lake.write_table(layout.daily_fragment("W", day), _fragment(day))
    assert consolidate.run(local_lake, workers=1).ok
    keys = {e.key for e in local_lake.list("bronze")}
    assert layout.consolidated("W") in keys
    assert all(k.startswith("bronze/raw_ohlcv/symbol=W/") for k in keys)
    assert local_lake.exists(layout.consolidation_manifest())
    assert not [p for p in os.listdir(local_lake.root) if p.startswith(".")]


@pytest.mark.parametrize(
    "cols",
    [
        pytest.param({"source": pa.array(["polygon"])}, id="unknown-source"),
        pytest.param({"open": pa.array([float("nan")])}, id="nan-open"),
    ],
)
def test_consolidate_keeps_out_rows_the_contract_rejects(
    local_lake: Lake, cols: dict[str, pa.Array]
) -> None:
    d0, d1 = _days(2)
    local_lake.write_table(layout.daily_fragment("W", d0), _fragment(d0))
    local_lake.write_table(layout.daily_fragment("W", d1), _fragment(d1, **cols))
    consolidate.run(local_lake, workers=1)
    merged = pq.read_table(local_lake.path(layout.consolidated("W")))
    assert merged["date"].to_pylist() == [d0]
    [kept] = [e.key for e in local_lake.list("quarantine/consolidate")]
    q = local_lake.read_table(kept)
    assert q["date"].to_pylist() == [d1] and q["reason"][0].as_py()
