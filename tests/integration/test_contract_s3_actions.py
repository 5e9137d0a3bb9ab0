"""Contract check: the same lake layout and code on S3 as on a local path.

The corporate-actions market of ``tests.unit.test_contract_actions`` (splits, dividends) and
the archived trades of ``tests.unit.test_contract_intraday`` go through consolidate (daily and
minutes), resample, gold and intraday with ``--lake s3://...`` and with a local path; every
silver and gold file, and the adjustments record, must be the same on both.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch import consolidate, gold, intraday, resample
from core import layout
from core.lake import Lake
from core.schemas import BRONZE_DAILY, BRONZE_MINUTE
from tests.unit import test_contract_actions as actions
from tests.unit import test_contract_intraday as trades

pytestmark = pytest.mark.integration


def _seed(lake: Lake) -> None:
    for df in (actions.RAW, actions.plain_rows()):
        table = pa.Table.from_pandas(df, schema=BRONZE_DAILY, preserve_index=False)
        sym = df["symbol"].iloc[0]
        lake.write_table(layout.range_fragment(sym, actions.ROW_DAYS[0], actions.LAST_ROW), table)
    lake.write_table(layout.reference_splits(), actions.splits_table())
    lake.write_table(layout.reference_dividends(), actions.dividends_table())
    minutes = trades.oracle_minutes(trades.day_trades()).assign(
        date=trades.DAY, source="rest", revision=0, partial=False, ingested_at=actions.NOW
    )
    table = pa.Table.from_pandas(minutes, schema=BRONZE_MINUTE, preserve_index=False)
    lake.write_table(layout.minute_fragment(trades.DAY, "rest-s3"), table)


def _run(url: str) -> None:
    assert consolidate.main(["--lake", url]) == 0
    assert consolidate.main(["--lake", url, "--minutes"]) == 0
    assert resample.main(["--lake", url]) == 0
    assert gold.main(["--lake", url, "--intervals", "1d,3d,34d"]) == 0
    assert intraday.main(["--lake", url]) == 0


def _tables(lake: Lake) -> dict[str, pa.Table]:
    out = {}
    for prefix in ("silver", "gold"):
        for e in lake.list(prefix, suffix=".parquet"):
            out[e.key] = pq.read_table(lake.path(e.key), filesystem=lake.fs)
    key = layout.adjustments()
    out[key] = lake.read_table(key).drop_columns(["applied_at"])
    return out


def test_s3_lake_holds_what_a_local_lake_holds(
    s3_lake: Lake, aws_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_endpoint)
    local = Lake((tmp_path / "lake").as_uri())
    for lake in (local, s3_lake):
        _seed(lake)
        _run(lake.url)
    here, there = _tables(local), _tables(s3_lake)
    assert sorted(here) == sorted(there)
    assert any(k.startswith("gold/indicators_34d/") for k in here)
    assert any(k.startswith("silver/silver_4h/") for k in here)
    for key, table in here.items():
        assert there[key].equals(table), key
