"""Jobs' counts as CloudWatch metrics, for the pipeline-health dashboard.

Every job already hands its counts to ``batch_jobs`` (:mod:`core.counts`); with
``METRICS_NAMESPACE`` set (Terraform sets it in AWS) the same numbers also go to CloudWatch, one
metric per count, named as the count (``rows``, ``quarantined``, ``unexplained_gaps``...), with a
``Job`` dimension: ``$PIPELINE_STEP`` (set by ``batch.pipeline`` and by each AWS Batch job
definition), else the job's own name. Metrics are a side channel: a job never fails because
they could not be sent; the counts are still recorded and the log says what was not sent.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from core.aws import client
from core.settings import MetricsSettings

log = logging.getLogger("core.metrics")

STEP_ENV: Final = "PIPELINE_STEP"
"""The step name a runner gives the job it starts (the ``Job`` dimension)."""
PER_CALL: Final = 500
"""Datums per PutMetricData call (AWS allows 1,000)."""

Datum = dict[str, Any]


def datums(counts: Mapping[str, Any], *, job: str | None, now: dt.datetime) -> list[Datum]:
    """One datum per finite number in ``counts`` (flags and text are not metrics)."""
    dims = [{"Name": "Job", "Value": job}] if job else []
    out = []
    for name, value in sorted(counts.items()):
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if not math.isfinite(value):
            continue
        seconds = name == "seconds" or name.endswith("_seconds")
        out.append(
            {
                "MetricName": name,
                "Dimensions": dims,
                "Timestamp": now,
                "Value": float(value),
                "Unit": "Seconds" if seconds else "Count",
            }
        )
    return out


def put(namespace: str, data: Sequence[Datum], settings: MetricsSettings) -> None:
    """PutMetricData in chunks the API accepts."""
    cw = client(
        "cloudwatch", endpoint_url=settings.aws_endpoint_url, region=settings.aws_default_region
    )
    for i in range(0, len(data), PER_CALL):
        cw.put_metric_data(Namespace=namespace, MetricData=list(data[i : i + PER_CALL]))


def publish(counts: Mapping[str, Any], job: str | None = None) -> bool:
    """Send ``counts`` when ``METRICS_NAMESPACE`` is set; True when they were sent."""
    settings = MetricsSettings()
    if not settings.metrics_namespace:
        return False
    name = os.environ.get(STEP_ENV) or job
    data = datums(counts, job=name, now=dt.datetime.now(dt.UTC))
    if not data:
        return False
    try:
        put(settings.metrics_namespace, data, settings)
    except (BotoCoreError, ClientError) as exc:  # a side channel: the counts are still recorded
        log.warning(
            "metrics of %s not sent to %s: %s: %s",
            name or "job", settings.metrics_namespace, type(exc).__name__, exc,
        )  # fmt: skip
        return False
    return True
