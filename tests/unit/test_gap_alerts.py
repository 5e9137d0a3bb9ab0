"""Which gaps are alerted: halts and delistings are explained; lost sessions and rows are not."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from batch.engine import gap_alerts
from batch.engine.gap_alerts import sort_gaps
from core import calendar, layout
from core.lake import Lake
from core.schemas import QUARANTINE, SYMBOL_META

pytestmark = pytest.mark.unit

DAYS = calendar.sessions_between(dt.date(2025, 3, 3), dt.date(2025, 4, 30))
LAST = DAYS[-1]


def _spans(*symbols: str, last: dt.date = LAST) -> dict[str, tuple[dt.date, dt.date]]:
    return {s: (DAYS[0], last) for s in symbols}


def test_a_lone_missing_session_is_a_halt_and_a_market_hole_is_unexplained() -> None:
    got = sort_gaps(
        [("AAA", DAYS[5], False), ("AAA", DAYS[9], True), ("BBB", DAYS[9], True)],
        [DAYS[9]],
        _spans("AAA", "BBB"),
        lake_last=LAST,
    )
    assert got.counts["halt"] == 1 and got.counts["market"] == 1
    assert got.total_unexplained == 1
    assert [(g.kind, g.date, g.symbol) for g in got.unexplained] == [("market", DAYS[9], None)]


def test_a_refused_row_is_not_a_halt() -> None:
    got = sort_gaps(
        [("AAA", DAYS[5], False), ("BBB", DAYS[6], False)],
        [],
        _spans("AAA", "BBB"),
        lake_last=LAST,
        quarantined={("AAA", DAYS[5]), ("AAA", DAYS[7])},
    )
    assert got.counts["quarantined"] == 1 and got.counts["halt"] == 1
    assert [(g.kind, g.symbol) for g in got.unexplained] == [("quarantined", "AAA")]


def test_a_session_many_symbols_lack_is_a_lost_write_not_a_wave_of_halts() -> None:
    names = [f"S{i:03d}" for i in range(100)]
    lost = [(s, DAYS[3], False) for s in names[:12]]  # 12 of 100: more than 5 %, at least 10
    few = [(s, DAYS[4], False) for s in names[:4]]  # 4 halts the same day: halts
    got = sort_gaps([*lost, *few], [], _spans(*names), lake_last=LAST)
    assert got.counts["partial"] == 12 and got.counts["halt"] == 4
    assert {g.date for g in got.unexplained} == {DAYS[3]}


def test_rows_that_stop_early_are_stale_when_listed_and_explained_when_delisted() -> None:
    spans = {
        "LIVE": (DAYS[0], DAYS[-8]),  # active, 7 sessions without a row
        "BLIP": (DAYS[0], DAYS[-3]),  # active, 2 sessions: too few to call
        "GONE": (DAYS[0], DAYS[-20]),  # delisted
        "CURR": (DAYS[0], LAST),
    }
    active = {"LIVE": True, "BLIP": True, "GONE": False, "CURR": True}
    got = sort_gaps([], [], spans, lake_last=LAST, active=active)
    assert got.counts["stale"] == 7 and got.counts["delisted"] == 1
    assert [(g.kind, g.symbol, g.date, g.sessions) for g in got.unexplained] == [
        ("stale", "LIVE", DAYS[-7], 7)
    ]
    assert sort_gaps([], [], spans, lake_last=LAST, active=None).total_unexplained == 0


def test_the_alert_message_counts_everything_and_lists_the_first() -> None:
    market = calendar.sessions_between(dt.date(2024, 1, 2), dt.date(2024, 6, 28))
    got = sort_gaps([], market, {}, lake_last=LAST)
    msg = got.message("s3://b/lake", "run-1")
    assert msg["counts"]["market"] == len(market) and msg["run_id"] == "run-1"
    assert msg["listed"] == gap_alerts.LISTED == len(msg["unexplained"])
    assert msg["unexplained"][0] == {
        "kind": "market",
        "symbol": None,
        "date": market[0].isoformat(),
        "sessions": 1,
    }


def test_quarantine_and_listings_are_read_from_the_lake(local_lake: Lake) -> None:
    assert gap_alerts.listings(local_lake) is None
    now = dt.datetime(2025, 5, 1, tzinfo=dt.UTC)
    meta = pa.table(
        {
            "symbol": ["AAA", "OLD", "OFF"],
            "active": [True, True, False],
            "delist_date": [None, dt.date(2025, 4, 1), None],
            "updated_at": [now] * 3,
        }
    )
    local_lake.write_table(layout.reference_tickers(), meta.cast(
        pa.schema([SYMBOL_META.field(n) for n in meta.column_names])
    ))  # fmt: skip
    assert gap_alerts.listings(local_lake) == {"AAA": True, "OLD": False, "OFF": False}
    rejected = pa.table(
        {
            "source": ["rest", "rest"],
            "symbol": ["AAA", None],
            "date": [DAYS[5], DAYS[5]],
            "reason": ["high < low", "bad symbol"],
            "payload": ["{}", "{}"],
            "received_at": [now, now],
        },
        schema=QUARANTINE,
    )
    local_lake.write_table(layout.quarantine_part("rest", DAYS[5], "x"), rejected)
    local_lake.write_table(layout.quarantine_part("rest", DAYS[6], "x"), rejected)
    assert gap_alerts.quarantined_keys(local_lake, {DAYS[5]}) == {("AAA", DAYS[5])}
