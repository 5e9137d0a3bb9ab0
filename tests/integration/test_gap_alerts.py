"""batch.gaps --alert on real services: unexplained gaps reach SNS, counts reach batch_jobs and
CloudWatch; halts are counted but not alerted."""

from __future__ import annotations

import datetime as dt
import uuid

import psycopg
import pytest

from batch import gaps
from core import calendar
from core.aws import client
from core.lake import Lake
from tests.aws_support import receive, topic_with_queue
from tests.batch_support import simple_rows, write_fragment

pytestmark = pytest.mark.integration

DAYS = calendar.sessions_between(dt.date(2025, 2, 3), dt.date(2025, 3, 28))
HALT, HOLE = DAYS[10], DAYS[20]


def test_unexplained_gaps_are_published_with_counts_and_recorded(
    local_lake: Lake, pg_url: str, aws_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = [d for d in DAYS if d != HOLE]
    write_fragment(local_lake, simple_rows("AAA", full))
    write_fragment(local_lake, simple_rows("BBB", [d for d in full if d != HALT]))
    namespace = f"Test/{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("DATABASE_URL", pg_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_endpoint)
    monkeypatch.setenv("METRICS_NAMESPACE", namespace)
    monkeypatch.setenv("BATCH_RUN_ID", "gaps-run")
    monkeypatch.delenv("PIPELINE_STEP", raising=False)
    with topic_with_queue(aws_endpoint) as (topic, queue):
        code = gaps.main(["--lake", local_lake.url, "--alert", "--sns-topic-arn", topic])
        messages = receive(aws_endpoint, queue)
    assert code == 0  # gaps are news, not a failure of the job
    assert len(messages) == 1
    msg = messages[0]
    assert msg["kind"] == "unexplained_gaps" and msg["run_id"] == "gaps-run"
    assert msg["counts"]["market"] == 1 and msg["counts"]["halt"] == 1
    assert msg["unexplained"] == [
        {"kind": "market", "symbol": None, "date": HOLE.isoformat(), "sessions": 1}
    ]
    with psycopg.connect(pg_url) as conn:
        status, counts = conn.execute(
            "SELECT status, counts FROM batch_jobs WHERE run_id = %s AND job = 'gaps'",
            ("gaps-run",),
        ).fetchone() or (None, {})
    assert status == "succeeded"
    assert counts["unexplained_gaps"] == 1 and counts["halt_gaps"] == 1
    cw = client("cloudwatch", endpoint_url=aws_endpoint)
    listed = cw.list_metrics(Namespace=namespace, MetricName="unexplained_gaps")["Metrics"]
    assert [m["Dimensions"] for m in listed] == [[{"Name": "Job", "Value": "gaps"}]]
