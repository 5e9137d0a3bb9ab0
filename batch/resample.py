"""Resample consolidated daily bars into Fibonacci bars (silver).

Implementation in progress: the signature of :func:`run` is fixed so the pipeline can call it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from core.lake import Lake
from core.schemas import FIB_INTERVALS
from core.sharding import Shard

WHOLE_MARKET = Shard()
"""The default shard: every symbol."""

Anchor = Literal["calendar", "symbol"]


@dataclass
class ResampleReport:
    """What one resample run did, per interval."""

    intervals: tuple[int, ...] = ()
    symbols: int = 0
    bars: int = 0
    files_written: int = 0
    files_deleted: int = 0
    full: bool = False
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when nothing failed."""
        return not self.failed


def run(
    lake: Lake,
    intervals: Sequence[int] = FIB_INTERVALS,
    anchor: Anchor = "calendar",
    full: bool = False,
    symbols: Sequence[str] | None = None,
    shard: Shard = WHOLE_MARKET,
    workers: int = 0,
    *,
    dry_run: bool = False,
    progress: bool = False,
) -> ResampleReport:
    """Bring silver up to date with the consolidated bronze."""
    raise NotImplementedError
