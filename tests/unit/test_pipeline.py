"""batch.pipeline: the plan, the weekly retention rule, failure messages, missing entry points."""

from __future__ import annotations

import datetime as dt

import pytest

from batch import pipeline
from core.schemas import FIB_INTERVALS

pytestmark = pytest.mark.unit

NOW = dt.datetime(2026, 6, 8, 22, 0, tzinfo=dt.UTC)


def test_the_plan_runs_ingest_backfill_consolidate_gaps_resamples_gold_then_vacuum() -> None:
    p = pipeline.plan("s3://b/lake", skip_ingest=False, retention=True, topic="arn:t")
    assert [name for name, _ in p.phases] == [
        "ingest",
        "backfill",
        "corporate actions",
        "consolidate",
        "gaps",
        "resample",
        "gold",
        "alerts",
        "vacuum",
        "retention",
    ]
    steps = {s.name: s.argv for _, phase in p.phases for s in phase}
    assert steps["gold"][:4] == ("-m", "batch.gold", "--lake", "s3://b/lake")
    assert steps["alerts"][:4] == ("-m", "batch.alerts", "--lake", "s3://b/lake")
    assert {s.name for s in p.phases[0][1]} == {"replay", "metadata", "heal"}
    assert steps["heal"] == ("-m", "dataflows.heal", "--lake", "s3://b/lake", "--no-progress")
    assert steps["replay"] == ("-m", "bytewax.run", "dataflows.replay:flow")
    assert steps["metadata"] == ("-m", "dataflows.metadata")
    # new listings found by metadata get their history before consolidation
    assert steps["backfill-new"][:3] == ("-m", "dataflows.backfill", "--new")
    # gaps after consolidation, alerting the run's topic
    gaps = steps["gaps"]
    assert gaps[:4] == ("-m", "batch.gaps", "--lake", "s3://b/lake")
    assert "--alert" in gaps and gaps[gaps.index("--sns-topic-arn") + 1] == "arn:t"
    assert steps["corporate-actions"] == (
        "-m", "dataflows.corporate_actions", "--lake", "s3://b/lake",
    )  # fmt: skip
    assert [s.argv for s in p.phases[3][1]] == [
        ("-m", "batch.consolidate", "--lake", "s3://b/lake", "--no-progress"),
        ("-m", "batch.consolidate", "--lake", "s3://b/lake", "--no-progress", "--minutes"),
    ]
    *resamples, intraday = p.phases[5][1]
    assert intraday.argv[:4] == ("-m", "batch.intraday", "--lake", "s3://b/lake")
    assert [s.name for s in resamples] == [f"resample-{n}d" for n in FIB_INTERVALS]
    for s, n in zip(resamples, FIB_INTERVALS, strict=True):
        assert s.argv[:2] == ("-m", "batch.resample")
        assert s.argv[2:4] == ("--lake", "s3://b/lake")
        assert s.argv[s.argv.index("--intervals") + 1] == str(n)
    text = p.describe()
    assert "6. resample (in parallel):" in text and "left out" not in text


def test_skip_ingest_and_retention_left_out_are_said_in_the_plan() -> None:
    p = pipeline.plan("/l", skip_ingest=True, retention="--retention never")
    assert [name for name, _ in p.phases] == [
        "consolidate", "gaps", "resample", "gold", "alerts", "vacuum",
    ]  # fmt: skip
    assert "--sns-topic-arn" not in p.phases[1][1][0].argv  # gaps reads SNS_TOPIC_ARN itself
    assert dict(p.left_out) == {
        "replay": "--skip-ingest",
        "metadata": "--skip-ingest",
        "heal": "--skip-ingest",
        "backfill-new": "--skip-ingest",
        "corporate-actions": "--skip-ingest",
        "retention": "--retention never",
    }
    assert "left out: retention: --retention never" in p.describe()


def test_the_summary_names_the_symbols_whose_vendor_factors_differ() -> None:
    r = pipeline.StepResult("corporate-actions", ok=True)
    r.counts = {"disagreeing_symbols": ["HT", "XYZ"]}
    text = pipeline.PipelineReport("run", [r]).summary()
    assert "differ (> 1e-6) for 2 symbols: HT, XYZ" in text


def test_retention_runs_weekly() -> None:
    def decide(mode: pipeline.Retention, last: dt.datetime | None, db: bool = True) -> object:
        return pipeline.retention_decision(mode, has_database=db, last_success=last, now=NOW)

    assert decide("weekly", None) is True
    assert decide("weekly", NOW - dt.timedelta(days=7, minutes=-5)) is True  # a drifting schedule
    assert isinstance(decide("weekly", NOW - dt.timedelta(days=6)), str)
    assert "DATABASE_URL" in str(decide("weekly", None, db=False))
    assert decide("always", NOW, db=False) is True
    assert decide("never", None) == "--retention never"


def test_a_missing_entry_point_fails_clearly() -> None:
    step = pipeline.Step("replay", "dataflows.no_such_flow", ("-m", "dataflows.no_such_flow"))
    result = pipeline.run_step(step, {}, "r1", None)
    assert not result.ok and result.error is not None
    assert "entry point missing" in result.error and "dataflows.no_such_flow" in result.error


def test_a_step_that_cannot_be_recorded_fails_without_stopping_the_run() -> None:
    the_plan = pipeline.Plan(
        phases=[("one", [pipeline.Step("noop", "batch.pipeline", ("-c", "pass"))])]
    )
    report = pipeline.execute(
        the_plan, run_id="r", env={}, database_url="postgresql://nobody@127.0.0.1:1/x", parallel=1
    )
    assert not report.ok and report.results[0].step == "noop"
    assert "OperationalError" in (report.results[0].error or "")


def test_the_failure_message_names_the_run_the_steps_and_their_errors() -> None:
    results = [
        pipeline.StepResult("consolidate", ok=False, exit_code=1, error="FAILED X: bad"),
        pipeline.StepResult("vacuum", ok=True, exit_code=0),
        pipeline.StepResult("resample-3d", ok=False, exit_code=2),
    ]
    assert pipeline.failure_message("run-7", results) == {
        "run_id": "run-7",
        "status": "failed",
        "failed_steps": ["consolidate", "resample-3d"],
        "errors": {"consolidate": "FAILED X: bad", "resample-3d": "exit code 2"},
    }
    report = pipeline.PipelineReport("run-7", results)
    assert not report.ok
    assert "FAILED consolidate (0.0s): FAILED X: bad" in report.summary()


def test_cli_help_and_dry_run(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        pipeline.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--lake", "--skip-ingest", "--sns-topic-arn", "--retention", "--dry-run"):
        assert flag in out
    assert pipeline.main(["--lake", "/nowhere", "--dry-run", "--retention", "never"]) == 0
    out = capsys.readouterr().out
    assert "1. ingest (in parallel):" in out and "python -m bytewax.run" in out
