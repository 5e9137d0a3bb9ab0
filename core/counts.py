"""How a job run as a ``batch.pipeline`` step hands its counts to the pipeline's record.

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


def hand(counts: Mapping[str, Any]) -> None:
    """Leave ``counts`` where the pipeline reads them, when it asked for them."""
    if path := os.environ.get(COUNTS_FILE_ENV):
        Path(path).write_text(json.dumps(dict(counts), default=str), encoding="utf-8")
