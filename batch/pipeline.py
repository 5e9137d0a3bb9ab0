"""The daily run in one command: ``python -m batch.pipeline``.

Phases, each waiting for the one before (steps inside a phase run in parallel):

1. ingest: the replay of missing sessions (``python -m bytewax.run dataflows.replay:flow``),
   the ticker metadata (``python -m dataflows.metadata``) and the healing of the live flow's
   gaps from REST minute aggregates (``python -m dataflows.heal``); left out with
   ``--skip-ingest``;
2. backfill: the whole history of listings new to us, which metadata has just found
   (``python -m dataflows.backfill --new``); left out with ``--skip-ingest``;
3. corporate actions (``python -m dataflows.corporate_actions``): splits and dividends, before
   consolidation so the resample adjusts with today's splits; the summary names every symbol
   whose vendor adjustment factor differs from ours; left out with ``--skip-ingest``;
4. ``python -m batch.consolidate``, and ``--minutes`` beside it (minute fragments per session,
   then the per-symbol month files of the months that changed);
5. ``python -m batch.gaps --alert``: missing sessions, the unexplained ones (not halts, not
   delistings) published to the SNS topic with their counts;
6. ``python -m batch.resample --intervals N`` for each of the six intervals, and beside them
   ``python -m batch.intraday`` (5m..4h bars of the sessions whose minutes changed);
7. ``python -m batch.gold``: the indicators of the daily and Fibonacci bars;
8. ``python -m batch.alerts``: the daily and Fibonacci alert rules on the final bars;
9. ``python -m batch.vacuum``;
10. ``python -m batch.retention``: ``--retention weekly`` (default) runs it when batch_jobs holds
   no successful retention in the last week; it works on Postgres, so without ``DATABASE_URL``
   the weekly run leaves it out and says so, ``always`` runs it anyway.

A new step is one more ``(phase, steps)`` entry in :func:`plan`.

Every step is its own subprocess (the same entry points the Step Functions schedule runs), so a
crash in one cannot corrupt another's state. A failed step does not stop the later phases: each
job is safe on whatever the lake holds (consolidation keeps the symbols it merged, resampling
reads only consolidated data, vacuum verifies every row); the run still fails at the end.

Each step is recorded in ``batch_jobs`` as ``pipeline/<step>`` (status, duration, error and the
counts the job hands back through ``$BATCH_COUNTS_FILE``) when ``DATABASE_URL`` is set; the
jobs also record themselves under the same run id. With ``METRICS_NAMESPACE`` set, each step's
duration and the run's outcome go to CloudWatch (the steps publish their own counts). A step whose entry point does not exist
fails with that reason, never skipped. On any failure a JSON message (run id, failed steps,
errors) goes to the SNS topic of ``--sns-topic-arn`` / ``SNS_TOPIC_ARN`` when one is set, and the
exit code is 1.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import importlib.util
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any, Final, Literal

from core import counts as job_counts
from core import metrics, notify
from core.schemas import FIB_INTERVALS
from core.settings import BatchSettings

log = logging.getLogger("batch.pipeline")

Retention = Literal["always", "never", "weekly"]
RETENTION_EVERY: Final = dt.timedelta(days=7) - dt.timedelta(hours=1)
"""A weekly retention runs when the last successful one is older than this (a daily schedule
drifting by a few minutes still runs it every seventh day)."""
ERROR_LINES: Final = 20
"""Lines of a failed step's stderr kept as its error."""


@dataclass(frozen=True)
class Step:
    """One subprocess of the run."""

    name: str
    module: str
    """The module that must exist for the step to run (its entry point)."""
    argv: tuple[str, ...]
    """Arguments after ``python``."""


@dataclass
class StepResult:
    """What one step did."""

    step: str
    ok: bool
    seconds: float = 0.0
    exit_code: int | None = None
    error: str | None = None
    counts: dict[str, Any] = field(default_factory=dict)


@dataclass
class Plan:
    """The phases of one run, and the steps left out with the reason."""

    phases: list[tuple[str, list[Step]]]
    left_out: list[tuple[str, str]] = field(default_factory=list)

    def describe(self) -> str:
        """The plan as text, one line per step (``--dry-run`` prints it)."""
        lines = []
        for i, (phase, steps) in enumerate(self.phases, 1):
            parallel = " (in parallel)" if len(steps) > 1 else ""
            lines.append(f"{i}. {phase}{parallel}:")
            lines += [f"   {s.name}: python {' '.join(s.argv)}" for s in steps]
        lines += [f"   left out: {name}: {why}" for name, why in self.left_out]
        return "\n".join(lines)


# -- the plan (pure) --------------------------------------------------------------------------
def plan(
    lake: str,
    *,
    skip_ingest: bool,
    retention: bool | str,
    workers: int = 1,
    intervals: Sequence[int] = FIB_INTERVALS,
    topic: str | None = None,
) -> Plan:
    """The steps of a run. ``retention`` is True, or the reason it is left out."""
    lake_args = ("--lake", lake, "--no-progress")
    out = Plan(phases=[])
    if skip_ingest:
        out.left_out += [
            ("replay", "--skip-ingest"),
            ("metadata", "--skip-ingest"),
            ("heal", "--skip-ingest"),
            ("backfill-new", "--skip-ingest"),
            ("corporate-actions", "--skip-ingest"),
        ]
    else:
        out.phases.append(
            (
                "ingest",
                [
                    Step(
                        "replay",
                        "dataflows.replay",
                        ("-m", "bytewax.run", "dataflows.replay:flow"),
                    ),
                    Step("metadata", "dataflows.metadata", ("-m", "dataflows.metadata")),
                    Step("heal", "dataflows.heal", ("-m", "dataflows.heal", *lake_args)),
                ],
            )
        )
        backfill = ("-m", "dataflows.backfill", "--new", "--no-progress")
        out.phases.append(("backfill", [Step("backfill-new", "dataflows.backfill", backfill)]))
        out.phases.append(
            (
                "corporate actions",
                [
                    Step(
                        "corporate-actions",
                        "dataflows.corporate_actions",
                        ("-m", "dataflows.corporate_actions", "--lake", lake),
                    )
                ],
            )
        )
    jobs = ("--workers", str(workers))
    out.phases.append(
        (
            "consolidate",
            [
                Step("consolidate", "batch.consolidate", ("-m", "batch.consolidate", *lake_args)),
                Step(
                    "consolidate-minutes",
                    "batch.consolidate",
                    ("-m", "batch.consolidate", *lake_args, "--minutes"),
                ),
            ],
        )
    )
    alert = ("--alert", *(("--sns-topic-arn", topic) if topic else ()))
    out.phases.append(
        ("gaps", [Step("gaps", "batch.gaps", ("-m", "batch.gaps", *lake_args, *alert))])
    )
    out.phases.append(
        (
            "resample",
            [
                Step(
                    f"resample-{n}d",
                    "batch.resample",
                    ("-m", "batch.resample", *lake_args, "--intervals", str(n), *jobs),
                )
                for n in intervals
            ]
            + [Step("intraday", "batch.intraday", ("-m", "batch.intraday", *lake_args, *jobs))],
        )
    )
    out.phases.append(("gold", [Step("gold", "batch.gold", ("-m", "batch.gold", *lake_args))]))
    out.phases.append(
        ("alerts", [Step("alerts", "batch.alerts", ("-m", "batch.alerts", *lake_args))])
    )
    out.phases.append(
        ("vacuum", [Step("vacuum", "batch.vacuum", ("-m", "batch.vacuum", *lake_args))])
    )
    if retention is True:
        out.phases.append(
            (
                "retention",
                [Step("retention", "batch.retention", ("-m", "batch.retention", *lake_args))],
            )
        )
    else:
        out.left_out.append(("retention", str(retention)))
    return out


def retention_decision(
    mode: Retention, *, has_database: bool, last_success: dt.datetime | None, now: dt.datetime
) -> bool | str:
    """True to run retention, else the reason it is left out."""
    if mode == "always":
        return True
    if mode == "never":
        return "--retention never"
    if not has_database:
        return "weekly, but DATABASE_URL is not set (retention works on Postgres)"
    if last_success is not None and now - last_success < RETENTION_EVERY:
        return f"weekly; last ran {last_success:%Y-%m-%d %H:%M} UTC"
    return True


def failure_message(run_id: str, results: Sequence[StepResult]) -> dict[str, Any]:
    """The JSON body published when a run fails."""
    failed = [r for r in results if not r.ok]
    return {
        "run_id": run_id,
        "status": "failed",
        "failed_steps": [r.step for r in failed],
        "errors": {r.step: r.error or f"exit code {r.exit_code}" for r in failed},
    }


# -- running ----------------------------------------------------------------------------------
def _pump(stream: IO[str], prefix: str, keep: collections.deque[str] | None) -> None:
    for line in stream:
        sys.stderr.write(f"[{prefix}] {line}")
        if keep is not None:
            keep.append(line.rstrip())


def _execute(step: Step, env: dict[str, str]) -> StepResult:
    """Run one step's subprocess, streaming its output with a prefix."""
    if importlib.util.find_spec(step.module) is None:
        return StepResult(
            step.name, ok=False, error=f"entry point missing: module {step.module} not found"
        )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pipeline-") as tmp:
        counts_file = os.path.join(tmp, "counts.json")
        proc = subprocess.Popen(
            [sys.executable, *step.argv],
            env={**env, job_counts.COUNTS_FILE_ENV: counts_file, metrics.STEP_ENV: step.name},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        tail: collections.deque[str] = collections.deque(maxlen=ERROR_LINES)
        assert proc.stdout is not None and proc.stderr is not None
        pumps = [
            threading.Thread(target=_pump, args=(proc.stdout, step.name, None), daemon=True),
            threading.Thread(target=_pump, args=(proc.stderr, step.name, tail), daemon=True),
        ]
        for t in pumps:
            t.start()
        code = proc.wait()
        for t in pumps:
            t.join()
        counts: dict[str, Any] = {}
        if os.path.exists(counts_file):
            with open(counts_file, encoding="utf-8") as f:
                counts = json.load(f)
    result = StepResult(
        step.name, ok=code == 0, seconds=time.perf_counter() - started, exit_code=code
    )
    result.counts = {**counts, "exit_code": code}
    if code != 0:
        result.error = "\n".join(tail) or f"exit code {code}"
    return result


@contextmanager
def _recorder(database_url: str | None) -> Iterator[Any]:
    """A connection for batch_jobs (None without DATABASE_URL)."""
    if database_url is None:
        yield None
        return
    from core.stores import postgres

    with postgres.connect(database_url, autocommit=True) as conn:
        postgres.migrate(conn)
        yield conn


class StepFailed(RuntimeError):
    """Raised inside the step's batch_jobs record so it is stored as failed."""


def run_step(step: Step, env: dict[str, str], run_id: str, database_url: str | None) -> StepResult:
    """Run and record one step (its own connection: steps run on threads)."""
    if database_url is None:
        return _execute(step, env)
    from core.stores import postgres

    with _recorder(database_url) as conn:
        result = StepResult(step.name, ok=False)
        try:
            with postgres.job_run(conn, run_id, f"pipeline/{step.name}") as counts:
                result = _execute(step, env)
                counts.update(result.counts)
                if not result.ok:
                    raise StepFailed(result.error)
        except StepFailed:
            pass
        return result


def _guarded(step: Step, env: dict[str, str], run_id: str, database_url: str | None) -> StepResult:
    """:func:`run_step`, with a failure to start or to record turned into the step's failure."""
    try:
        return run_step(step, env, run_id, database_url)
    except Exception as exc:  # reported as this step's failure; the run exits non-zero
        log.debug("step %s could not run", step.name, exc_info=True)
        return StepResult(step.name, ok=False, error=f"{type(exc).__name__}: {exc}")


def last_retention(database_url: str) -> dt.datetime | None:
    """When retention last really ran over the whole database, by itself or in a pipeline.

    Dry runs and runs limited to symbols or a shard do not count.
    """
    from batch import retention

    return retention.last_success(database_url)


def publish_failure(
    topic_arn: str, message: dict[str, Any], endpoint_url: str | None, region: str
) -> None:
    """Publish the failure message to SNS."""
    notify.publish(
        topic_arn,
        "condvest batch pipeline failed",
        message,
        endpoint_url=endpoint_url,
        region=region,
    )


@dataclass
class PipelineReport:
    """What one run did."""

    run_id: str
    results: list[StepResult] = field(default_factory=list)
    seconds: float = 0.0
    notified: bool = False

    @property
    def ok(self) -> bool:
        """True when every step succeeded."""
        return all(r.ok for r in self.results)

    def summary(self) -> str:
        """One line per step and a total."""
        lines = []
        for r in self.results:
            last = (r.error or "").strip().splitlines()[-1:] or [""]
            why = "" if r.ok else f": {last[0]}"
            lines.append(f"  {'ok    ' if r.ok else 'FAILED'} {r.step} ({r.seconds:.1f}s){why}")
        for r in self.results:
            symbols = r.counts.get("disagreeing_symbols") or []
            if symbols:
                lines.append(
                    f"  vendor and our adjustment factors differ (> 1e-6) for {len(symbols)} "
                    f"symbols: {', '.join(map(str, symbols))}"
                )
        failed = sum(not r.ok for r in self.results)
        head = f"pipeline run {self.run_id}: {len(self.results)} steps, {failed} failed, "
        return head + f"{self.seconds:.1f}s\n" + "\n".join(lines)


def execute(
    the_plan: Plan,
    *,
    run_id: str,
    env: dict[str, str],
    database_url: str | None,
    parallel: int,
) -> PipelineReport:
    """Run the phases in order, the steps of a phase in parallel."""
    started = time.perf_counter()
    report = PipelineReport(run_id)
    for phase, steps in the_plan.phases:
        log.info("phase %s: %s", phase, ", ".join(s.name for s in steps))
        with ThreadPoolExecutor(max(1, min(parallel, len(steps)))) as ex:
            results = list(ex.map(lambda s: _guarded(s, env, run_id, database_url), steps))
        for r in results:
            log.log(
                logging.INFO if r.ok else logging.ERROR,
                "%s %s in %.1fs",
                r.step,
                "succeeded" if r.ok else "FAILED",
                r.seconds,
            )
        report.results += results
        for r in results:
            metrics.publish({"seconds": r.seconds}, r.step)
    report.seconds = time.perf_counter() - started
    metrics.publish(
        {
            "runs_succeeded": int(report.ok),
            "runs_failed": int(not report.ok),
            "run_seconds": report.seconds,
        }
    )
    return report


# -- command line -----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="python -m batch.pipeline",
        description="The daily batch run: replay + metadata + heal of live gaps, backfill of new listings, "
        "corporate actions, consolidate, gaps (unexplained ones to SNS), the six resamples, "
        "gold indicators, "
        "vacuum, weekly retention; every step recorded in batch_jobs, failures to SNS.",
    )
    p.add_argument("--lake", metavar="URL", help="lake root (default: $LAKE_URL or ./data/lake)")
    p.add_argument(
        "--skip-ingest",
        action="store_true",
        help="no replay and no metadata (lake-only use)",
    )
    p.add_argument(
        "--retention",
        choices=("always", "never", "weekly"),
        default="weekly",
        help="run batch.retention: weekly (default: when the last success is a week old), "
        "always or never",
    )
    p.add_argument(
        "--sns-topic-arn",
        metavar="ARN",
        help="publish failures to this SNS topic (default: $SNS_TOPIC_ARN)",
    )
    p.add_argument(
        "--parallel",
        type=int,
        default=len(FIB_INTERVALS),
        help="steps of one phase run at once (default: 6, all resamples together)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="--workers of each resample (default 1: six run side by side)",
    )
    p.add_argument("--run-id", help="id for batch_jobs (default: a new uuid)")
    p.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m batch.pipeline``."""
    p = build_parser()
    ns = p.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if ns.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if ns.parallel < 1 or ns.workers < 0:
        p.error("--parallel must be >= 1 and --workers >= 0")
    settings = BatchSettings()
    lake = ns.lake or settings.lake_url
    topic = ns.sns_topic_arn or settings.sns_topic_arn
    database_url = (
        settings.database_url.get_secret_value() if settings.database_url is not None else None
    )
    run_id = ns.run_id or uuid.uuid4().hex
    try:
        last = last_retention(database_url) if database_url and ns.retention == "weekly" else None
        decision = retention_decision(
            ns.retention,
            has_database=database_url is not None,
            last_success=last,
            now=dt.datetime.now(dt.UTC),
        )
        the_plan = plan(
            lake, skip_ingest=ns.skip_ingest, retention=decision, workers=ns.workers, topic=topic
        )
    except Exception as exc:  # planning failed (e.g. Postgres unreachable): report it
        log.error("planning failed: %s: %s", type(exc).__name__, exc)
        report = PipelineReport(run_id, [StepResult("plan", ok=False, error=str(exc))])
        return _finish(report, topic, settings)
    print(f"pipeline run {run_id} on {lake}\n{the_plan.describe()}", flush=True)
    if ns.dry_run:
        return 0
    env = {**os.environ, "LAKE_URL": lake, "BATCH_RUN_ID": run_id}
    report = execute(
        the_plan, run_id=run_id, env=env, database_url=database_url, parallel=ns.parallel
    )
    return _finish(report, topic, settings)


def _finish(report: PipelineReport, topic: str | None, settings: BatchSettings) -> int:
    print(report.summary(), flush=True)
    if report.ok:
        return 0
    if topic:
        message = failure_message(report.run_id, report.results)
        try:
            publish_failure(topic, message, settings.aws_endpoint_url, settings.aws_default_region)
            report.notified = True
            log.info("failure published to %s", topic)
        except Exception as exc:  # the run fails either way; say the alert did not go out
            log.error("could not publish the failure to SNS: %s: %s", type(exc).__name__, exc)
    return 1


if __name__ == "__main__":
    sys.exit(main())
