"""core.metrics: which counts become CloudWatch metrics, and that it stays off unless asked."""

from __future__ import annotations

import datetime as dt

import pytest

from core import metrics

pytestmark = pytest.mark.unit

NOW = dt.datetime(2025, 6, 2, 21, 30, tzinfo=dt.UTC)


def test_numbers_become_metrics_and_flags_text_and_nan_do_not() -> None:
    counts = {"rows": 12, "quarantined": 0, "seconds": 1.5, "run_seconds": 9.0, "full": True,
              "error": "x", "ratio": float("nan"), "exit_code": 0}  # fmt: skip
    got = {d["MetricName"]: d for d in metrics.datums(counts, job="consolidate", now=NOW)}
    assert set(got) == {"rows", "quarantined", "seconds", "run_seconds", "exit_code"}
    assert got["rows"]["Value"] == 12.0 and got["rows"]["Unit"] == "Count"
    assert got["seconds"]["Unit"] == "Seconds" and got["run_seconds"]["Unit"] == "Seconds"
    assert got["rows"]["Dimensions"] == [{"Name": "Job", "Value": "consolidate"}]
    assert got["rows"]["Timestamp"] == NOW
    assert metrics.datums({"runs_failed": 1}, job=None, now=NOW)[0]["Dimensions"] == []


def test_nothing_is_sent_without_a_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("METRICS_NAMESPACE", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # would fail if called
    assert metrics.publish({"rows": 1}, "x") is False


def test_an_unreachable_cloudwatch_never_fails_the_job(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METRICS_NAMESPACE", "Test/nowhere")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    assert metrics.publish({"rows": 1}, "x") is False
