"""What a replay did: sessions complete, empty and failed, rows, files; its summary line.

The store fills one report from its workers' threads; the command line prints its summary and
hands its counts to the pipeline.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from core.stores.ledger import SessionOutcome


@dataclass
class ReplayReport:
    """What a run did; ``ok`` is False when any session failed."""

    requested: int = 0
    complete: list[dt.date] = field(default_factory=list)
    empty: list[dt.date] = field(default_factory=list)
    failed: dict[dt.date, str] = field(default_factory=dict)
    rows: int = 0
    quarantined: int = 0
    files: int = 0
    db_rows: int = 0
    seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """No session failed (empty sessions are reported, retried next run, not failures)."""
        return not self.failed

    def add(self, outcomes: Sequence[SessionOutcome], rows: int, files: int, db_rows: int) -> None:
        """Count a stored chunk (thread-safe: workers share one report)."""
        with self._lock:
            for o in outcomes:
                if o.status == "complete":
                    self.complete.append(o.session)
                elif o.status == "empty":
                    self.empty.append(o.session)
                else:
                    self.failed[o.session] = o.error or "failed"
                self.quarantined += o.quarantined
            self.rows += rows
            self.files += files
            self.db_rows += db_rows

    def counts(self) -> dict[str, int | float]:
        """What the pipeline records for the replay step."""
        return {
            "sessions_requested": self.requested,
            "sessions_complete": len(self.complete),
            "sessions_empty": len(self.empty),
            "sessions_failed": len(self.failed),
            "rows": self.rows,
            "quarantined": self.quarantined,
            "files": self.files,
            "db_rows": self.db_rows,
        }

    def summary(self) -> str:
        """One line for stderr and logs."""
        fetched = len(self.complete) + len(self.empty) + len(self.failed)
        line = (
            f"replay: {fetched}/{self.requested} sessions fetched, {len(self.complete)} complete,"
            f" {len(self.empty)} empty, {len(self.failed)} failed; {self.rows} rows,"
            f" {self.quarantined} quarantined, {self.files} files, {self.db_rows} rows to Postgres"
        )
        if self.seconds:
            line += f" in {self.seconds:.1f}s"
        if self.empty:
            line += "; empty (retried next run): " + ", ".join(d.isoformat() for d in self.empty)
        if self.failed:
            worst = sorted(self.failed.items())[:5]
            line += "; failed: " + "; ".join(f"{d}: {e}" for d, e in worst)
            if len(self.failed) > len(worst):
                line += f" (+{len(self.failed) - len(worst)} more)"
        return line
