"""batch.gaps on an S3 lake (the emulated endpoint): the same report as on a local lake."""

from __future__ import annotations

import datetime as dt

import pytest

from batch import gaps
from core import calendar
from core.lake import Lake
from tests.batch_support import simple_rows, write_fragment

pytestmark = pytest.mark.integration


def test_gaps_on_s3(s3_lake: Lake, local_lake: Lake) -> None:
    days = calendar.sessions_between(dt.date(2024, 6, 3), dt.date(2024, 7, 31))
    for lake in (s3_lake, local_lake):
        write_fragment(lake, simple_rows("AAA", [d for d in days if d != days[5]]))
        write_fragment(lake, simple_rows("BBB", days[3:]))
    found, files = gaps.run(s3_lake)
    assert files == 2
    assert [(r["symbol"], r["date"]) for r in found.symbol_gaps.to_pylist()] == [("AAA", days[5])]
    assert found.market_gaps.num_rows == 0
    assert gaps.run(local_lake)[0].symbol_gaps.equals(found.symbol_gaps)
    written = gaps.write(s3_lake, gaps.GAPS_DIR, found, gaps.WHOLE_MARKET)
    assert written == [
        s3_lake.uri(f"{gaps.GAPS_DIR}/{n}") for n in gaps.output_keys(gaps.WHOLE_MARKET)
    ]
    assert s3_lake.read_table(f"{gaps.GAPS_DIR}/symbol_gaps.parquet").num_rows == 1
