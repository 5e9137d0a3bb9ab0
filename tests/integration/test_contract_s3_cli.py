"""Contract review: the batch entry points with ``--lake s3://...`` as separate processes."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from core import calendar, layout
from core.lake import Lake
from core.schemas import BRONZE_DAILY, SILVER
from tests.batch_support import (
    read_silver,
    reference_bars,
    reference_merge,
    sessions,
    simple_rows,
    write_fragment,
)

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_consolidate_resample_gaps_vacuum_by_cli_on_s3(
    s3_lake: Lake, s3_bucket: str, aws_endpoint: str, local_lake: Lake, tmp_path: Path
) -> None:
    i = calendar.session_index(dt.date(2018, 11, 28))
    days = sessions()[i : i + 12]  # across the 2018-12-05 closure and a month end
    rows = [*simple_rows("BRK.B", days), *simple_rows("BF-A", days[2:], base=30.0)]
    for r in rows:
        write_fragment(s3_lake, [r])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AWS_ENDPOINT_URL": aws_endpoint}
    env.pop("DATABASE_URL", None)
    env.pop("LAKE_URL", None)
    url = f"s3://{s3_bucket}/lake"
    for job in ("consolidate", "resample", "gaps", "vacuum"):
        done = subprocess.run(
            [sys.executable, "-m", f"batch.{job}", "--lake", url],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, (job, done.stdout, done.stderr)
    history = reference_merge(rows)
    for n in (3, 5, 8):
        got = {}
        for e in s3_lake.list(layout.silver_dir(n), suffix=".parquet"):
            stamp = e.key.rsplit("_", 1)[-1].removesuffix(".parquet")
            t = pq.read_table(s3_lake.path(e.key), filesystem=s3_lake.fs)
            assert t.schema.remove_metadata().equals(SILVER)
            got[(int(stamp[:4]), int(stamp[4:]))] = [tuple(r.values()) for r in t.to_pylist()]
        assert got == reference_bars(history, n, "calendar"), n
    data = pq.read_table(s3_lake.path(layout.consolidated("BRK.B")), filesystem=s3_lake.fs)
    assert data.schema.remove_metadata().equals(BRONZE_DAILY)
    assert data["date"].to_pylist() == days
    assert s3_lake.exists(layout.consolidation_manifest())
    assert s3_lake.exists(layout.silver_checkpoint(34))
    assert not read_silver(local_lake, 3)  # nothing leaked to the local default lake
