"""One session's grouped-daily answer as it travels through the replay flow, and its checks.

The source emits a :class:`Fetch` per session and a :class:`ChunkEnd` after a chunk's last one;
:func:`check_item` splits each fetch into valid rows (BRONZE_DAILY), rejected rows (QUARANTINE)
and the ledger's outcome. Pure: no I/O, so the checks are tested on plain tables.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.schemas import BRONZE_DAILY, QUARANTINE
from core.stores import ledger
from core.stores.ledger import SessionOutcome
from core.validation import check_daily, quarantine_payloads, quarantine_table

SOURCE: Final = "rest"


@dataclass(frozen=True, slots=True)
class Fetch:
    """One session's grouped-daily answer, or why there is none."""

    session: dt.date
    table: pa.Table
    """The answer's rows as columns (:func:`dataflows.connectors.polygon.grouped_table`), converted
    in the fetch thread."""
    junk: list[dict[str, Any]]
    """Entries that were not JSON objects at all."""
    attempts: int
    fetched_at: dt.datetime
    error: str | None = None
    part: str = ""

    @property
    def rows(self) -> int:
        """Entries in the answer."""
        return int(self.table.num_rows) + len(self.junk)


@dataclass(frozen=True, slots=True)
class ChunkEnd:
    """Every session of a chunk has been emitted: the store writes the chunk's files now."""

    part: str
    sessions: tuple[dt.date, ...]


@dataclass(frozen=True, slots=True)
class Checked:
    """One validated session: valid rows (BRONZE_DAILY), rejects (QUARANTINE), outcome."""

    part: str
    valid: pa.Table
    rejected: pa.Table
    outcome: SessionOutcome


Emitted = Fetch | ChunkEnd


def _reject_extra(valid: pa.Table, session: dt.date) -> tuple[pa.Table, pa.Table | None, list[str]]:
    """Rows that pass row-level checks but not the session's: another date, a repeated symbol.

    Vectorised (a session has thousands of rows); the first row of a repeated symbol is kept.
    """
    n = valid.num_rows
    if n == 0:
        return valid, None, []
    wrong_day = pc.not_equal(valid["date"], pa.scalar(session, pa.date32()))
    wrong = np.asarray(wrong_day.to_numpy(zero_copy_only=False), dtype=bool)
    codes = pc.dictionary_encode(valid["symbol"].combine_chunks()).indices
    _, first = np.unique(codes.to_numpy(zero_copy_only=False), return_index=True)
    repeated = np.ones(n, dtype=bool)
    repeated[first] = False
    bad = wrong | repeated
    if not bad.any():
        return valid, None, []
    idx = np.flatnonzero(bad)
    day_reason = f"date is not the requested session {session.isoformat()}"
    reasons = [
        "; ".join(
            r
            for r, hit in ((day_reason, wrong[i]), ("duplicate symbol in the session", repeated[i]))
            if hit
        )
        for i in idx.tolist()
    ]
    return valid.filter(pa.array(~bad)), valid.take(pa.array(idx)), reasons


def _outcome(
    f: Fetch,
    status: ledger.Status,
    *,
    rows: int = 0,
    quarantined: int = 0,
    error: str | None = None,
) -> SessionOutcome:
    return SessionOutcome(
        session=f.session,
        status=status,
        rows=rows,
        quarantined=quarantined,
        attempts=f.attempts,
        source=SOURCE,
        fetched_at=f.fetched_at,
        error=error,
    )


def check_fetch(fetch: Fetch) -> tuple[pa.Table, pa.Table, SessionOutcome]:
    """Valid rows, rejected rows (QUARANTINE) and the ledger outcome of one session."""
    empty_valid, no_rejects = BRONZE_DAILY.empty_table(), QUARANTINE.empty_table()
    if fetch.error is not None:
        return empty_valid, no_rejects, _outcome(fetch, "failed", error=fetch.error)
    if not fetch.rows:
        error = "no rows returned (data not ready?)"
        return empty_valid, no_rejects, _outcome(fetch, "empty", error=error)
    raw, junk = fetch.table, fetch.junk
    checked = check_daily(raw, source=SOURCE, received_at=fetch.fetched_at)
    valid, extra, reasons = _reject_extra(checked.valid, fetch.session)
    parts = [checked.rejected]
    if extra is not None:
        parts.append(quarantine_table(extra, reasons, SOURCE, fetch.fetched_at))
    if junk:
        reason = "result entry is not a JSON object"
        parts.append(quarantine_payloads(junk, [reason] * len(junk), SOURCE, fetch.fetched_at))
    rejected = pa.concat_tables(parts)
    if valid.num_rows == 0:
        error = f"all {rejected.num_rows} rows rejected"
        return valid, rejected, _outcome(fetch, "empty", quarantined=rejected.num_rows, error=error)
    outcome = _outcome(fetch, "complete", rows=valid.num_rows, quarantined=rejected.num_rows)
    return valid, rejected, outcome


def check_item(item: Emitted) -> Checked | ChunkEnd:
    """Validate one fetched session; chunk ends pass through."""
    if isinstance(item, ChunkEnd):
        return item
    valid, rejected, outcome = check_fetch(item)
    return Checked(item.part, valid, rejected, outcome)
