"""Consolidate bronze fragments into one ``symbol=X/data.parquet`` per symbol.

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
class ConsolidateReport:
    """What one consolidation run did."""

    symbols: int = 0
    changed: int = 0
    fragments_merged: int = 0
    rows: int = 0
    earliest_changed: dt.date | None = None
    fragments_deleted: int = 0
    bytes_deleted: int = 0
    failed: dict[str, str] = field(default_factory=dict)
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
    cleanup: bool = True,
    retention_days: int | None = None,
    progress: bool = False,
    now: dt.datetime | None = None,
) -> ConsolidateReport:
    """Merge every fragment not yet merged; see the module docstring."""
    raise NotImplementedError
