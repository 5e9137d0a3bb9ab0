"""What gold is computed from: split-adjusted daily rows of each symbol, through one door.

Gold's 1d bars are the consolidated daily rows; its Fibonacci bars are silver's bars, built by
the same function (:func:`batch.engine.fib.bars_and_segments`) from the same rows, so both read
the daily rows once. Prices are split-adjusted exactly as silver's
(:func:`batch.engine.fib.split_adjusted`, S(d) of :mod:`core.adjustments` from
``reference/splits/splits.parquet``), and each symbol's split version is recorded so a new,
changed or withdrawn split recomputes the symbol.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from batch.engine import daily_rows, fib
from batch.engine import manifest as mf
from batch.engine.checkpoint import SymbolMark
from core import adjustments, indicators, layout
from core.lake import Entry, Lake

log = logging.getLogger("batch.gold")


@dataclass(frozen=True)
class Splits:
    """Every symbol's split factors, as gold applies them."""

    book: adjustments.SplitBook = field(default_factory=adjustments.SplitBook)

    def versions(self, symbols: Iterable[str]) -> dict[str, str]:
        """The split version of each symbol (what its adjusted prices depend on)."""
        return self.book.versions(symbols)

    def adjust(self, daily: fib.Daily) -> fib.Daily:
        """``daily`` with every price x S(d) and volume / S(d)."""
        return fib.split_adjusted(daily, self.book)


def splits(lake: Lake) -> Splits:
    """The splits of the lake (none when corporate actions were never fetched)."""
    book = adjustments.split_book(lake)
    if not book.present:
        log.warning(
            "no %s in the lake: indicators are computed as if no symbol had split; run "
            "`python -m dataflows.corporate_actions` to fetch the splits",
            layout.reference_splits(),
        )
    return Splits(book)


@dataclass(frozen=True)
class Inputs:
    """Split-adjusted rows of the symbols to recompute, and their checkpoint marks."""

    daily: fib.Daily
    marks: dict[str, SymbolMark]
    forked: bool = False
    """The rows were read on forked workers: the computing may fork too."""


def read(
    lake: Lake,
    book: Splits,
    resume: Mapping[str, int | None],
    entries: Mapping[str, Entry],
    states: Mapping[str, mf.SymbolState],
    workers: int,
    *,
    progress: bool = False,
    processes: bool | None = None,
) -> Inputs:
    """The rows of every symbol in ``resume`` from its resume date (None: its whole history).

    Rows come from the consolidator's tails where they reach back far enough, else from
    data.parquet; a large local read runs on forked workers into shared memory, while the
    compiled loops load (:mod:`batch.engine.daily_rows`, as resample reads them).
    """
    symbols = sorted(resume)
    redo = {1: dict(resume)}  # a 1-session cut: the rows must reach back to the resume date
    sources = daily_rows.tail_sources(lake, symbols, redo, dict(entries), dict(states))
    counts = daily_rows.row_counts([s for s in symbols if s not in sources], entries, states)
    forked = daily_rows.use_processes(lake, processes, workers, counts)
    warming = None
    if forked and sum(counts.values()) >= indicators.COMPILED_MIN_BARS:
        warming = threading.Thread(target=_warm, daemon=True)
    daily, marks = daily_rows.load(
        lake, symbols, redo, dict(entries), dict(states), "calendar", workers, progress,
        counts=counts if forked else None,
        after_fork=warming.start if warming is not None else None, sources=sources,
    )  # fmt: skip
    if warming is not None:
        if warming.ident is None:
            warming.start()
        warming.join()
    return Inputs(book.adjust(daily), marks, forked)


def _warm() -> None:
    """Load both compiled loops (Fibonacci bars, indicators) while the rows are read."""
    from core import indicator_loops

    fib.warm_compiled()
    indicator_loops.warm()


def whole(symbols: Sequence[str]) -> dict[str, int | None]:
    """A resume map recomputing every symbol from its first row."""
    return dict.fromkeys(symbols)
