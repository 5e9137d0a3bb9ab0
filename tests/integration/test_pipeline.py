"""python -m batch.pipeline on real services: batch_jobs in Postgres, failures to SNS -> SQS."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from batch import pipeline
from core import calendar, layout
from core.lake import Lake
from tests.aws_support import receive, topic_with_queue
from tests.batch_support import sessions, simple_rows, write_fragment

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture()
def topic_and_queue(aws_endpoint: str) -> Iterator[tuple[str, str]]:
    with topic_with_queue(aws_endpoint) as pair:
        yield pair


def _jobs(pg_url: str, run_id: str) -> dict[str, tuple[str, dict[str, Any], str | None]]:
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "SELECT job, status, counts, error FROM batch_jobs WHERE run_id = %s", (run_id,)
        ).fetchall()
    return {job: (status, counts, error) for job, status, counts, error in rows}


def _market(lake: Lake) -> None:
    i = calendar.session_index(dt.date(2024, 5, 1))
    days = sessions()[i : i + 40]
    for s in ("AAA", "BBB", "CCC"):
        write_fragment(lake, simple_rows(s, days))


def test_a_failed_step_is_recorded_and_published_and_a_green_run_is_all_succeeded(
    local_lake: Lake,
    pg_url: str,
    aws_endpoint: str,
    topic_and_queue: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic, queue_url = topic_and_queue
    monkeypatch.setenv("DATABASE_URL", pg_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_endpoint)
    monkeypatch.delenv("SNS_TOPIC_ARN", raising=False)
    _market(local_lake)
    bad = layout.daily_fragment("BBB", dt.date(2024, 7, 1))
    local_lake.write_bytes(bad, b"not parquet at all")
    base = ["--lake", local_lake.url, "--skip-ingest", "--retention", "never"]

    code = pipeline.main([*base, "--sns-topic-arn", topic, "--run-id", "red"])
    assert code == 1
    messages = receive(aws_endpoint, queue_url)
    assert len(messages) == 1
    msg = messages[0]
    # gaps cannot read BBB's broken fragment either; the other steps ran all the same
    assert msg["run_id"] == "red" and msg["failed_steps"] == ["consolidate", "gaps"]
    assert "BBB" in msg["errors"]["consolidate"]
    jobs = _jobs(pg_url, "red")
    assert jobs["pipeline/consolidate"][0] == "failed"
    assert "BBB" in (jobs["pipeline/consolidate"][2] or "")
    assert jobs["pipeline/consolidate"][1]["failed"] == 1  # counts handed back by the job
    assert jobs["consolidate"][0] == "failed"  # the job's own record, same run id
    # the other symbols were merged and resampled all the same
    assert local_lake.exists(layout.consolidated("AAA"))
    assert {jobs[f"pipeline/resample-{n}d"][0] for n in (3, 5, 8, 13, 21, 34)} == {"succeeded"}
    assert "FAILED consolidate" in capsys.readouterr().out

    local_lake.delete(bad)
    monkeypatch.setenv("SNS_TOPIC_ARN", topic)  # from the environment this time
    assert pipeline.main([*base, "--run-id", "green"]) == 0
    jobs = _jobs(pg_url, "green")
    steps = {j: v for j, v in jobs.items() if j.startswith("pipeline/")}
    assert set(steps) == {
        "pipeline/consolidate",
        "pipeline/gaps",
        "pipeline/gold",
        "pipeline/alerts",
        "pipeline/consolidate-minutes",
        "pipeline/intraday",
        "pipeline/vacuum",
        *(f"pipeline/resample-{n}d" for n in (3, 5, 8, 13, 21, 34)),
    }
    assert {status for status, _, _ in jobs.values()} == {"succeeded"}
    assert steps["pipeline/resample-8d"][1]["bars"] > 0
    assert steps["pipeline/gaps"][1]["unexplained_gaps"] == 0  # no gap: nothing published
    assert not receive(aws_endpoint, queue_url)
    assert local_lake.exists(layout.silver_checkpoint(34))
    assert steps["pipeline/gold"][1]["rows"] > 0 and local_lake.exists(layout.gold_state("34d"))
    assert steps["pipeline/alerts"][1]["rules"] == 0  # no rules: evaluated nothing, sent nothing
