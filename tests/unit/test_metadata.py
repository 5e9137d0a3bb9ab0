"""Metadata's pure conversion: typed rows from Polygon's tickers list and details."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from core.schemas import SYMBOL_META
from dataflows import metadata

pytestmark = pytest.mark.unit
NOW = dt.datetime(2024, 2, 21, 22, 0, tzinfo=dt.UTC)
LISTED = {
    "ticker": "ABC",
    "name": "Abc Inc.",
    "market": "stocks",
    "primary_exchange": "XNAS",
    "type": "CS",
    "active": True,
}


def test_parse_day() -> None:
    assert metadata.parse_day("2024-02-06T00:00:00Z") == dt.date(2024, 2, 6)
    assert metadata.parse_day("2024-02-06") == dt.date(2024, 2, 6)
    assert metadata.parse_day("soon") is None
    assert metadata.parse_day(None) is None


def test_meta_row_types_from_list_and_details() -> None:
    details = {
        **LISTED,
        "market_cap": 1_234_567_890,
        "sic_code": "7370",
        "sic_description": "SERVICES-COMPUTER PROGRAMMING",
        "list_date": "2001-05-04",
    }
    row = metadata.meta_row(LISTED, details, NOW)
    assert row == {
        "symbol": "ABC",
        "name": "Abc Inc.",
        "type": "CS",
        "exchange": "XNAS",
        "active": True,
        "market_cap": 1_234_567_890.0,
        "sic_code": "7370",
        "sic_description": "SERVICES-COMPUTER PROGRAMMING",
        "list_date": dt.date(2001, 5, 4),
        "delist_date": None,
        "updated_at": NOW,
    }
    bare = metadata.meta_row(
        {**LISTED, "active": False, "delisted_utc": "2024-02-06T00:00:00Z"}, None, NOW
    )
    assert bare["active"] is False and bare["delist_date"] == dt.date(2024, 2, 6)
    assert bare["market_cap"] is None and bare["sic_code"] is None


def test_delisted_and_table() -> None:
    assert metadata.delisted(["A", "B", "C"], ["A", "C", "D"]) == ["B"]
    row = metadata.meta_row(LISTED, {"market_cap": 5}, NOW)
    table = metadata.to_table([row, {**row, "symbol": "ABD", "market_cap": Decimal("7.25")}])
    assert table.schema == SYMBOL_META
    assert table["market_cap"].to_pylist() == [5.0, 7.25]


def test_cli_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        metadata.main(["--help"])
    assert done.value.code == 0
    assert "--details" in capsys.readouterr().out
