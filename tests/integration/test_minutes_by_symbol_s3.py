"""Per-symbol month files of minutes on S3 (the emulated endpoint): the same code as locally."""

from __future__ import annotations

import pytest

from batch import consolidate
from batch.engine import minutes
from batch.engine import minutes_by_symbol as by_symbol
from core import layout
from core.lake import Lake
from tests.unit.test_minutes_by_symbol import NOV, check, derived, elsewhere, frag, market, rows

pytestmark = pytest.mark.integration


def test_built_read_and_kept_true_on_s3(
    s3_lake: Lake, aws_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_endpoint)
    market(s3_lake)
    assert consolidate.main(["--minutes", "--lake", s3_lake.url, "--no-progress"]) == 0
    assert s3_lake.exists(layout.minute_month_file("NEWCO", 2024, 12))
    assert elsewhere(s3_lake, "AAPL") == [] and elsewhere(s3_lake, "NEWCO") == []
    check(s3_lake)
    first = derived(s3_lake)
    assert by_symbol.run(s3_lake).unchanged == 2
    frag(s3_lake, NOV[2], "live2", rows("AAPL", NOV[2], range(1, 2), 77.0), revision=1)
    minutes.run(s3_lake)  # re-consolidated after the build: read from its session file
    assert elsewhere(s3_lake, "AAPL") == [NOV[2]]
    check(s3_lake)
    assert by_symbol.run(s3_lake).built == 1
    assert elsewhere(s3_lake, "AAPL") == []
    check(s3_lake)
    after = derived(s3_lake)
    assert {k: v for k, v in after.items() if "2024-12" in k} == {
        k: v for k, v in first.items() if "2024-12" in k
    }
