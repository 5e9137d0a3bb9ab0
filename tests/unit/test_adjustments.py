"""core.adjustments: S(d), T(d), the split version, on hand-made cases and public facts."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from core import adjustments as adj
from core.adjustments import Actions, Dividend, Split
from core.lake import Lake
from core.schemas import SPLITS

pytestmark = pytest.mark.unit
D = dt.date
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _days(*dates: dt.date) -> list[int]:
    return [adj.to_days(d) for d in dates]


def test_forward_split_4_for_1() -> None:
    s = (Split(D(2020, 8, 31), 1, 4),)
    f = adj.split_factors(_days(D(2020, 8, 28), D(2020, 8, 31), D(2020, 9, 1)), s)
    assert f.tolist() == [0.25, 1.0, 1.0]


def test_reverse_split_1_for_10() -> None:
    s = (Split(D(2024, 3, 4), 10, 1, "reverse_split"),)
    f = adj.split_factors(_days(D(2024, 3, 1), D(2024, 3, 4)), s)
    assert f.tolist() == [10.0, 1.0]


def test_two_splits_multiply_before_the_first_and_one_applies_between() -> None:
    s = (Split(D(2024, 6, 10), 1, 10), Split(D(2020, 1, 6), 1, 2))
    a = Actions("X", s)
    assert [x.execution_date for x in a.splits] == [D(2020, 1, 6), D(2024, 6, 10)]
    f = adj.split_factors(
        _days(D(2019, 12, 31), D(2020, 1, 6), D(2024, 6, 7), D(2024, 6, 10)), a.splits
    )
    assert f.tolist() == [0.5 * 0.1, 0.1, 0.1, 1.0]


def test_stock_dividend_adjusts_like_a_split() -> None:
    s = (Split(D(2024, 5, 1), 100, 105, "stock_dividend"),)
    assert adj.split_factors(_days(D(2024, 4, 30)), s).tolist() == [100 / 105]


def test_split_adjusted_prices_and_volume() -> None:
    table = pa.table(
        {
            "date": pa.array([D(2020, 8, 28), D(2020, 8, 31)], pa.date32()),
            "open": [500.0, 127.0],
            "high": [510.0, 131.0],
            "low": [490.0, 126.0],
            "close": [499.23, 129.04],
            "volume": [46_907_479.0, 225_702_688.0],
            "vwap": [None, 128.5],
        }
    )
    a = Actions("AAPL", (Split(D(2020, 8, 31), 1, 4),))
    out, f = adj.adjust_table(table, a, "split")
    assert out["close"].to_pylist() == [499.23 * 0.25, 129.04]
    assert out["volume"].to_pylist() == [46_907_479.0 / 0.25, 225_702_688.0]
    assert out["vwap"].to_pylist() == [None, 128.5]
    raw, _ = adj.adjust_table(table, a, "none")
    assert raw.equals(table)
    assert f.skipped == ()


def _history() -> tuple[list[int], list[float]]:
    days = _days(D(2024, 1, 2), D(2024, 1, 3), D(2024, 1, 4), D(2024, 1, 5), D(2024, 1, 8))
    return days, [100.0, 101.0, 102.0, 25.5, 26.0]


def test_total_return_factor_is_split_times_dividend_terms() -> None:
    days, closes = _history()
    a = Actions(
        "X",
        (Split(D(2024, 1, 5), 1, 4),),
        (
            Dividend(D(2024, 1, 4), 1.01),
            Dividend(D(2024, 1, 8), 0.255, distribution_type="special"),
        ),
    )
    f = adj.factors(days, a, "total", adj.close_before_from(days, closes))
    t1, t2 = 1 - 1.01 / 101.0, 1 - 0.255 / 25.5
    assert f.price.tolist() == [0.25 * (t1 * t2), 0.25 * (t1 * t2), 0.25 * t2, t2, 1.0]
    assert f.volume.tolist() == [0.25, 0.25, 0.25, 1.0, 1.0]  # volume stays split-adjusted
    assert f.skipped == ()


def test_dividend_on_a_split_day_takes_the_raw_close_before_and_warns() -> None:
    days, closes = _history()
    a = Actions("X", (Split(D(2024, 1, 5), 1, 4),), (Dividend(D(2024, 1, 5), 0.25),))
    f = adj.factors(days, a, "total", adj.close_before_from(days, closes))
    term = 1 - 0.25 / 102.0  # C: the raw close of 2024-01-04, exactly as defined
    assert f.price.tolist() == [0.25 * term, 0.25 * term, 0.25 * term, 1.0, 1.0]
    assert len(f.warnings) == 1 and "predates the split of 2024-01-05" in f.warnings[0]


def test_dividend_before_the_first_row_is_skipped_and_reported() -> None:
    days, closes = _history()
    a = Actions("X", (), (Dividend(D(2024, 1, 2), 0.5), Dividend(D(2023, 6, 1), 0.5)))
    f = adj.factors(days, a, "total", adj.close_before_from(days, closes))
    assert f.price.tolist() == [1.0] * 5
    assert [s.ex_dividend_date for s in f.skipped] == [D(2023, 6, 1), D(2024, 1, 2)]
    assert all("no row before" in s.reason for s in f.skipped)


@pytest.mark.parametrize(
    ("dividend", "reason"),
    [
        (Dividend(D(2024, 1, 3), 100.0), "cash_amount >= the close 100"),
        (Dividend(D(2024, 1, 3), 150.0), "cash_amount >= the close"),
        (Dividend(D(2024, 1, 3), 1.0, currency="CAD"), "not USD"),
        (Dividend(D(2024, 1, 3), -1.0), "not a positive amount"),
        (Dividend(D(2024, 1, 3), math.nan), "not a positive amount"),
    ],
)
def test_dividends_that_cannot_be_applied_are_skipped_and_reported(
    dividend: Dividend, reason: str
) -> None:
    days, closes = _history()
    f = adj.factors(
        days, Actions("X", (), (dividend,)), "total", adj.close_before_from(days, closes)
    )
    assert f.price.tolist() == [1.0] * 5
    assert len(f.skipped) == 1 and reason in f.skipped[0].reason
    assert reason.split()[0] in f.skipped[0].line() or "X" in f.skipped[0].line()


def test_total_needs_the_closes_and_unknown_modes_are_refused() -> None:
    with pytest.raises(ValueError, match="close_before"):
        adj.factors([1], Actions("X"), "total")
    with pytest.raises(ValueError, match="unknown adjustment 'raw'"):
        adj.check_mode("raw")


def test_split_version_changes_with_dates_and_ratios_only() -> None:
    a = (Split(D(2024, 6, 10), 1, 10, id="a"),)
    assert adj.split_version(a) == adj.split_version((Split(D(2024, 6, 10), 1.0, 10.0, id="b"),))
    assert adj.split_version(a) != adj.split_version((Split(D(2024, 6, 11), 1, 10),))
    assert adj.split_version(a) != adj.split_version((Split(D(2024, 6, 10), 1, 4),))
    assert adj.split_version(()) == adj.NO_SPLITS
    two = (Split(D(2020, 1, 6), 1, 2), *a)
    assert adj.split_version(two) == adj.split_version(tuple(reversed(two)))


def test_segment_factors_touch_only_rows_before_a_split() -> None:
    book = adj.SplitBook({"B": (Split(D(2024, 1, 4), 1, 2), Split(D(2024, 1, 8), 1, 3))})
    days, _ = _history()
    offsets = [0, 5, 10]
    idx, f = adj.segment_split_factors(["A", "B"], offsets, days + days, book)
    assert idx.tolist() == [5, 6, 7, 8]
    assert f.tolist() == [0.5 * (1 / 3), 0.5 * (1 / 3), 1 / 3, 1 / 3]
    dense = np.ones(10)
    dense[idx] = f
    assert dense[5:].tolist() == adj.split_factors(days, book.of("B")).tolist()


def test_vendor_factors_are_compared_with_ours() -> None:
    days, closes = _history()
    a = Actions(
        "X",
        (
            Split(D(2024, 1, 4), 1, 2, vendor_factor=0.5 / 3),
            Split(D(2024, 1, 8), 1, 3, vendor_factor=0.3),
        ),
        (
            Dividend(D(2024, 1, 3), 1.0, vendor_factor=0.99),
            Dividend(D(2023, 1, 3), 1.0, vendor_factor=0.9),
        ),
    )
    found = adj.vendor_disagreements(a, adj.close_before_from(days, closes))
    assert [(x.kind, x.date) for x in found] == [
        ("split", D(2024, 1, 8)),
        ("dividend", D(2023, 1, 3)),
    ]
    assert found[1].ours is None and "no row before" in found[1].note


def test_public_splits_are_continuous_once_adjusted() -> None:
    cases = json.loads((FIXTURES / "public_splits.json").read_text())["cases"]
    for c in cases:
        split = Split(D.fromisoformat(c["execution_date"]), c["split_from"], c["split_to"])
        ratio = c["split_to"] / c["split_from"]
        before, on = c["before"], c["on"]
        raw_jump = before["close"] / on["close"]
        assert abs(raw_jump / ratio - 1) < 0.15, c["symbol"]
        days = _days(D.fromisoformat(before["date"]), D.fromisoformat(on["date"]))
        f = adj.split_factors(days, (split,))
        adjusted = [before["close"] * f[0], on["close"] * f[1]]
        assert abs(adjusted[0] / adjusted[1] - 1) < 0.15, c["symbol"]


def test_split_book_from_the_lake(local_lake: Lake) -> None:
    assert adj.split_book(local_lake).present is False
    now = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    local_lake.write_table(
        "reference/splits/splits.parquet",
        pa.table(
            {
                "symbol": ["B", "A", "B"],
                "execution_date": [D(2024, 1, 8), D(2024, 1, 4), D(2024, 1, 4)],
                "split_from": [1.0, 10.0, 1.0],
                "split_to": [3.0, 1.0, 2.0],
                "adjustment_type": ["forward_split", "reverse_split", "forward_split"],
                "vendor_factor": [None, None, None],
                "id": [None, None, None],
                "ingested_at": [now] * 3,
            },
            schema=SPLITS,
        ),
    )
    book = adj.split_book(local_lake)
    assert [s.execution_date for s in book.of("B")] == [D(2024, 1, 4), D(2024, 1, 8)]
    assert book.version("C") == adj.NO_SPLITS
    assert adj.actions_of(local_lake, "A").splits[0].ratio == 10.0
    recorded = adj.record_table({"A": book.version("A")}, {}, now)
    adj.write_recorded(local_lake, recorded)
    assert adj.read_recorded(local_lake) == {"A": (book.version("A"), now)}
    later = adj.record_table(
        {"A": book.version("A"), "B": "x"},
        adj.read_recorded(local_lake),
        now + dt.timedelta(days=1),
    )
    assert later["applied_at"].to_pylist()[0] == now
    assert adj.changed_symbols({"A": book.version("A"), "B": "y"}, {"A": book.version("A")}) == {
        "B"
    }


def test_unchanged_from_is_the_day_from_which_no_adjusted_price_moves() -> None:
    a, b = dt.date(2020, 3, 2), dt.date(2021, 6, 1)
    four, two = Split(a, 1, 4), Split(b, 1, 2)
    day = adj.to_days
    assert adj.unchanged_from((), ()) is None
    assert adj.unchanged_from((four,), (four, two)) == day(b)  # a new split: rows before it
    assert adj.unchanged_from((four, two), (four,)) == day(b)  # withdrawn
    assert adj.unchanged_from((four, two), (Split(a, 1, 3), two)) == day(a)  # an older ratio
    assert adj.unchanged_from((four,), (Split(b, 1, 4),)) == day(b)  # moved later
    assert adj.unchanged_from((two,), (Split(b, 2, 4),)) is None  # the same ratio, restated


def test_checkpoint_marks_keep_their_splits() -> None:
    from batch.engine.checkpoint import SymbolMark, split_steps

    splits = (Split(dt.date(2020, 3, 2), 1, 4), Split(dt.date(2021, 6, 1), 3, 1))
    mark = SymbolMark(3, 10, 20, 100, 200, adj.split_version(splits), split_steps(splits))
    again = SymbolMark.from_json(json.loads(json.dumps(mark.to_json())))
    assert again == mark and again.split_objects() == splits
    assert SymbolMark.from_json(mark.to_json()[:6]).split_objects() is None  # an older mark
    plain = SymbolMark(3, 10, 20, 100, 200)
    assert len(plain.to_json()) == 6 and SymbolMark.from_json(plain.to_json()).split_objects() == ()
