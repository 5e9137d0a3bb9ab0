"""Delete bronze fragments whose rows are verified present in data.parquet.

Implementation in progress: the signature of :func:`run` is fixed so the pipeline can call it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from core.lake import Lake
from core.sharding import Shard

WHOLE_MARKET = Shard()
"""The default shard: every symbol."""


@dataclass
class VacuumReport:
    """What one vacuum run removed (or would remove, with ``dry_run``)."""

    symbols: int = 0
    fragments: int = 0
    bytes: int = 0
    kept_unverified: int = 0
    removed: list[tuple[str, int]] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    dry_run: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no symbol failed."""
        return not self.failed


def run(
    lake: Lake,
    symbols: Sequence[str] | None = None,
    shard: Shard = WHOLE_MARKET,
    workers: int = 0,
    dry_run: bool = False,
    *,
    retention_days: int | None = None,
    progress: bool = False,
    now: dt.datetime | None = None,
) -> VacuumReport:
    """Remove merged, verified fragments older than the retention."""
    raise NotImplementedError
