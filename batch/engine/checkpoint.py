"""Resample checkpoints: ``processing_metadata/silver_{N}d_checkpoint.json``.

Per interval: the anchor the silver was built with (an incremental run with another anchor is
refused), the lake's last date it was built against (to flip ``complete`` when that advances),
a generation counter (shard staging is keyed by it), and per symbol what was resampled: the
consolidation version (the manifest's change history says where to restart), the size and
mtime of data.parquet (to notice files written without the manifest), its first and last
date (which month files hold its bars) and the split version its prices were adjusted with (a
new or changed split rebuilds the symbol), with those splits themselves, so a new split
rebuilds only the bars whose prices it moves.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from core import adjustments, layout
from core.adjustments import NO_SPLITS
from core.lake import Entry, Lake

log = logging.getLogger("batch.checkpoint")
FORMAT: Final = 3
"""3: split-adjusted silver, each symbol's split version in its mark (2: unadjusted silver with
statistics on the key columns only; 1: statistics on every column)."""


SplitSteps = tuple[tuple[int, float, float], ...]
"""Splits as (execution day as date32, split_from, split_to), by day."""


@dataclass(frozen=True, slots=True)
class SymbolMark:
    """What one symbol's silver was last built from."""

    version: int | None
    size: int
    mtime_s: int
    first_day: int
    last_day: int
    split_version: str = NO_SPLITS
    """The splits the bars were adjusted with (:func:`core.adjustments.split_version`)."""
    splits: SplitSteps | None = ()
    """Those splits as (execution day, split_from, split_to); None when not known (marks
    written before they were kept)."""

    def to_json(self) -> list[Any]:
        """Compact JSON form (the splits only when there are some)."""
        out: list[Any] = [
            self.version, self.size, self.mtime_s, self.first_day, self.last_day,
            self.split_version,
        ]  # fmt: skip
        if self.splits:
            out.append([list(s) for s in self.splits])
        return out

    @classmethod
    def from_json(cls, raw: list[Any]) -> SymbolMark:
        """Parse :meth:`to_json`."""
        # JSON numbers come back as the ints written (a checkpoint of the full market holds
        # thousands of marks, read on every run: no conversions beyond what the types need)
        v, size, mtime, first, last, version = raw[:6]
        splits: SplitSteps | None = None
        if len(raw) > 6:
            splits = tuple((int(d), float(a), float(b)) for d, a, b in raw[6])
        elif version == NO_SPLITS:
            splits = ()
        return cls(v, size, mtime, first, last, version, splits)

    def split_objects(self) -> tuple[adjustments.Split, ...] | None:
        """:attr:`splits` as :class:`core.adjustments.Split` objects.

        None when not known, or when they do not match :attr:`split_version` (then nothing is
        assumed about them).
        """
        if self.splits is None:
            return None
        out = tuple(adjustments.Split(adjustments.from_days(d), a, b) for d, a, b in self.splits)
        return out if adjustments.split_version(out) == self.split_version else None


def split_steps(splits: Sequence[adjustments.Split]) -> SplitSteps:
    """:data:`SplitSteps` of ``splits``."""
    return tuple(
        (adjustments.to_days(s.execution_date), float(s.split_from), float(s.split_to))
        for s in sorted(splits, key=lambda x: x.execution_date)
    )


def mtime_seconds(entry: Entry) -> int:
    """Listing mtime in whole seconds (S3 listings and HEAD differ below a second)."""
    return int(entry.mtime.timestamp()) if entry.mtime else 0


@dataclass
class Checkpoint:
    """One interval's checkpoint."""

    interval: int
    anchor: str
    last_day: int | None = None
    generation: int = 0
    symbols: dict[str, SymbolMark] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON form (dates as ISO strings where a human reads them)."""
        return {
            "format": FORMAT,
            "interval": self.interval,
            "anchor": self.anchor,
            "last_date": _iso(self.last_day),
            "generation": self.generation,
            "symbols": {s: m.to_json() for s, m in sorted(self.symbols.items())},
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Checkpoint:
        """Parse :meth:`to_json`."""
        if obj.get("format") != FORMAT:
            msg = f"unsupported checkpoint format {obj.get('format')!r}; rebuild with --full"
            raise ValueError(msg)
        last = obj.get("last_date")
        return cls(
            interval=int(obj["interval"]),
            anchor=str(obj["anchor"]),
            last_day=_days(dt.date.fromisoformat(last)) if last else None,
            generation=int(obj["generation"]),
            symbols={s: SymbolMark.from_json(m) for s, m in obj["symbols"].items()},
        )


def _days(day: dt.date) -> int:
    return (day - dt.date(1970, 1, 1)).days


def _iso(days: int | None) -> str | None:
    return None if days is None else (dt.date(1970, 1, 1) + dt.timedelta(days=days)).isoformat()


def read(lake: Lake, interval: int) -> Checkpoint | None:
    """The checkpoint of ``interval``, or None before the first run."""
    obj = lake.read_json(layout.silver_checkpoint(interval))
    if obj is None:
        return None
    if isinstance(obj.get("format"), int) and obj["format"] < FORMAT:
        # silver written by an older release: its bytes differ from today's, so the interval is
        # rebuilt (as on a first run) rather than patched into a mix of the two
        log.warning(
            "silver_%sd was written by an older release (checkpoint format %s); rebuilding it",
            interval,
            obj["format"],
        )
        return None
    return Checkpoint.from_json(obj)


def write(lake: Lake, checkpoint: Checkpoint) -> None:
    """Write atomically (after the month files it describes)."""
    lake.write_json(layout.silver_checkpoint(checkpoint.interval), checkpoint.to_json())
