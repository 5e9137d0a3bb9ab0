"""How a job hands its counts to the pipeline's record (and to CloudWatch when configured).

The pipeline sets ``BATCH_COUNTS_FILE`` for each step's process; the step writes its counts
there as JSON when it ends (even when it fails), and the pipeline stores them in batch_jobs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

COUNTS_FILE_ENV: Final = "BATCH_COUNTS_FILE"


def hand(counts: Mapping[str, Any], job: str | None = None) -> None:
    """Leave ``counts`` where the pipeline reads them, when it asked for them.

    They also go to CloudWatch when ``METRICS_NAMESPACE`` is set (:mod:`core.metrics`), so a
    job run by any scheduler feeds the pipeline-health dashboard.
    """
    if path := os.environ.get(COUNTS_FILE_ENV):
        Path(path).write_text(json.dumps(dict(counts), default=str), encoding="utf-8")
    from core import metrics  # boto3 only when a job ends

    metrics.publish(counts, job)
