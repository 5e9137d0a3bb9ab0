"""Fill the live flow's gaps from Polygon's REST minute aggregates: ``python -m dataflows.heal``.

The live flow records in Postgres ``live_gaps`` every span it knows it missed (a connect, a
reconnect, a stop, trades beyond the revision horizon). For each open gap this job fetches
``/v2/aggs/ticker/{T}/range/1/minute/{from}/{to}`` (every ``next_url`` page, through the shared
rate-limited :class:`~dataflows.connectors.polygon.PolygonGateway`) and writes the bars as
bronze minute fragments with ``source=rest``, which win over live bars at consolidation. A gap
is marked healed only when every fetch it needed succeeded; a failed one keeps its error and is
retried by the next run. Rows that break the contract go to ``quarantine/heal/`` with a reason.

Fetches are planned per (symbol, session): all of a symbol's gaps of a session become one
request spanning them. A market-wide gap applies to ``--symbols``, else to ``LIVE_SYMBOLS``
when it names symbols, else to every symbol with minute bars in the lake that session (a symbol
that traded only inside the gap is then unknown to the healer: name it with ``--symbols``).

Idempotent: fragments are named by their content (a rerun writes the same files), and healed
gaps are not fetched again.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import math
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import psycopg

from core import calendar, layout
from core import counts as job_counts
from core.lake import Lake, LakeError, open_lake
from core.secrets import install_redaction
from core.stores import gaps as gap_store
from core.stores import postgres
from dataflows.connectors.minute_sink import write_fragments
from dataflows.connectors.polygon import PolygonError
from dataflows.connectors.quarantine_sink import content_id, quarantine_rows
from dataflows.minute_fold import MINUTE_MS, MinuteBar, session_date
from dataflows.trades import Reject, now_ms

log = logging.getLogger("dataflows.heal")
GetJson = Callable[[str, dict[str, Any]], dict[str, Any]]
PAGE_LIMIT: Final = 50_000
MAX_PAGES: Final = 1000
"""A guard against a server that hands back the same ``next_url`` forever."""
QUARANTINE_SOURCE: Final = "heal"
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def to_ms(when: dt.datetime) -> int:
    """An aware datetime as Unix ms."""
    return (when - _EPOCH) // dt.timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class Fetch:
    """One REST request: a symbol's minutes in [lo, hi) of one session, for these gaps.

    Only the bars inside ``spans`` (the gaps themselves) are kept: a minute between two gaps
    was seen whole by the live flow.
    """

    symbol: str
    day: dt.date
    lo: int
    hi: int
    gap_ids: tuple[int, ...]
    spans: tuple[tuple[int, int], ...]

    def covers(self, start: int) -> bool:
        """True when the minute starting at ``start`` lies in one of the gaps."""
        return any(lo <= start < hi for lo, hi in self.spans)


def _minute_floor(ms: int) -> int:
    return ms - ms % MINUTE_MS


def _ceil_minute(ms: int) -> int:
    return -(-ms // MINUTE_MS) * MINUTE_MS


def _split_by_session(lo: int, hi: int) -> list[tuple[dt.date, int, int]]:
    """[lo, hi) cut at New York midnights, keeping only the session days."""
    out: list[tuple[dt.date, int, int]] = []
    cur = _minute_floor(lo)
    end = _ceil_minute(hi)
    while cur < end:
        day = session_date(cur)
        nxt = _EPOCH + dt.timedelta(milliseconds=cur)
        midnight = dt.datetime.combine(
            nxt.astimezone(calendar.NEW_YORK).date() + dt.timedelta(days=1),
            dt.time(),
            tzinfo=calendar.NEW_YORK,
        )
        stop = min(end, to_ms(midnight))
        if calendar.is_session(day):
            out.append((day, cur, stop))
        cur = stop
    return out


def plan(
    gaps: Iterable[gap_store.GapRow],
    symbols_of: Callable[[dt.date], Sequence[str]],
    *,
    only: frozenset[str] | None = None,
) -> list[Fetch]:
    """The requests that heal ``gaps``: one per (symbol, session), spanning its gaps.

    ``symbols_of(day)`` names the symbols a market-wide gap of that session covers; ``only``
    limits every gap to these symbols.
    """
    spans: dict[tuple[str, dt.date], list[tuple[int, int]]] = defaultdict(list)
    ids: dict[tuple[str, dt.date], set[int]] = defaultdict(set)
    for g in gaps:
        for day, lo, hi in _split_by_session(to_ms(g.start), to_ms(g.end)):
            names = [g.symbol] if g.symbol is not None else list(symbols_of(day))
            for sym in names:
                if only is not None and sym not in only:
                    continue
                spans[(sym, day)].append((lo, hi))
                ids[(sym, day)].add(g.id)
    return [
        Fetch(
            sym,
            day,
            min(lo for lo, _ in found),
            max(hi for _, hi in found),
            tuple(sorted(ids[(sym, day)])),
            tuple(sorted(set(found))),
        )
        for (sym, day), found in sorted(spans.items())
    ]


def fetch_results(get_json: GetJson, symbol: str, lo: int, hi: int) -> list[Any]:
    """Every result of the unadjusted minute aggregates in [lo, hi), following ``next_url``."""
    path = f"/v2/aggs/ticker/{layout.check_symbol(symbol)}/range/1/minute/{lo}/{hi - 1}"
    params: dict[str, Any] = {"adjusted": "false", "sort": "asc", "limit": PAGE_LIMIT}
    out: list[Any] = []
    for _ in range(MAX_PAGES):
        body = get_json(path, params)
        results = body.get("results") or []
        if not isinstance(results, list):
            msg = f"minute aggregates of {symbol}: 'results' is not a list"
            raise PolygonError(msg, status=200)
        out.extend(results)
        nxt = body.get("next_url")
        if not nxt:
            return out
        path, params = str(nxt), {}
    msg = f"minute aggregates of {symbol}: more than {MAX_PAGES} pages"
    raise PolygonError(msg, status=200)


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def _why_bad(r: Any, lo: int, hi: int) -> str | None:
    if not isinstance(r, dict):
        return "result is not an object"
    t = r.get("t")
    if type(t) is not int or t % MINUTE_MS:
        return "t: missing or not on the minute"
    if not lo <= t < hi:
        return "t: outside the requested span"
    o, h, low, c = (_number(r.get(k)) for k in ("o", "h", "l", "c"))
    if o is None or h is None or low is None or c is None or min(o, h, low, c) <= 0:
        return "o/h/l/c: missing, not a number or not positive"
    if low > min(o, c) or h < max(o, c):
        return "high/low do not bound open and close"
    v = _number(r.get("v"))
    if v is None or v < 0:
        return "v: missing, not a number or negative"
    n = r.get("n", 0)
    if type(n) is not int or n < 0:
        return "n: not a non-negative integer"
    if r.get("vw") is not None and _number(r.get("vw")) is None:
        return "vw: not a number"
    if not calendar.is_session(session_date(t)):
        return "t: its New York date is not an XNYS session"
    return None


def rest_bars(
    symbol: str, results: Sequence[Any], lo: int, hi: int, received_at: int
) -> tuple[list[MinuteBar], list[Reject]]:
    """REST minute aggregates as final, complete bars; the unusable ones as rejects."""
    bars: list[MinuteBar] = []
    rejects: list[Reject] = []
    for r in results:
        why = _why_bad(r, lo, hi)
        if why is not None:
            payload = (
                {"symbol": symbol, **r} if isinstance(r, dict) else {"symbol": symbol, "raw": r}
            )
            rejects.append(Reject(payload, why, received_at))
            continue
        vw = _number(r.get("vw"))
        bars.append(
            MinuteBar(
                symbol=symbol,
                start=r["t"],
                open=float(r["o"]),
                high=float(r["h"]),
                low=float(r["l"]),
                close=float(r["c"]),
                volume=float(r["v"]),
                vwap=vw,
                trades=int(r.get("n", 0)),
                final=True,
                revision=0,
                partial=False,
            )
        )
    return bars, rejects


# -- the run ----------------------------------------------------------------------------------
@dataclass
class HealReport:
    """What a run did."""

    gaps: int = 0
    fetches: int = 0
    bars: int = 0
    rejected: int = 0
    healed: int = 0
    fragments: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    """``SYMBOL DATE`` -> error, for the fetches that failed."""
    seconds: float = 0.0

    def counts(self) -> dict[str, Any]:
        """For the pipeline's record."""
        return {
            "gaps": self.gaps,
            "fetches": self.fetches,
            "bars": self.bars,
            "rejected": self.rejected,
            "healed": self.healed,
            "failed": len(self.failed),
        }

    def summary(self) -> str:
        """One line for the log."""
        return (
            f"heal: {self.gaps} open gaps, {self.fetches} fetches, {self.bars} bars written, "
            f"{self.rejected} rejected, {self.healed} gaps healed, {len(self.failed)} fetches "
            f"failed in {self.seconds:.1f}s"
        )


def lake_symbols(lake: Lake, day: dt.date) -> list[str]:
    """Every symbol with minute bars in the lake on ``day``."""
    keys = [e.key for e in lake.list(layout.minute_dir(day) + "/", suffix=".parquet")]
    if not keys:
        return []
    names: set[str] = set()
    for key in keys:  # one by one: a dataset would read ``date=`` as a partition column
        names.update(lake.read_table(key, columns=["symbol"])["symbol"].unique().to_pylist())
    return sorted(names)


def heal(
    lake: Lake,
    conn: psycopg.Connection[Any],
    get_json: GetJson,
    *,
    since: dt.datetime | None = None,
    symbols: frozenset[str] | None = None,
    market_symbols: Sequence[str] | None = None,
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> HealReport:
    """Heal every open gap (ending after ``since``); see the module's docstring.

    ``market_symbols`` are the symbols a market-wide gap covers (default: the lake's symbols of
    its session).
    """
    started = time.perf_counter()
    report = HealReport()
    open_gaps = gap_store.open_gaps(conn, since=since)
    report.gaps = len(open_gaps)
    cache: dict[dt.date, Sequence[str]] = {}

    def symbols_of(day: dt.date) -> Sequence[str]:
        if symbols is not None:
            return sorted(symbols)
        if market_symbols is not None:
            return market_symbols
        if day not in cache:
            cache[day] = lake_symbols(lake, day)
        return cache[day]

    fetches = plan(open_gaps, symbols_of, only=symbols)
    report.fetches = len(fetches)
    if dry_run:
        for f in fetches:
            log.info("would fetch %s %s [%s, %s)", f.symbol, f.day, _hm(f.lo), _hm(f.hi))
        report.seconds = time.perf_counter() - started
        return report
    errors: dict[int, str] = {}
    for i, f in enumerate(fetches, 1):
        try:
            results = fetch_results(get_json, f.symbol, f.lo, f.hi)
            bars, rejects = rest_bars(f.symbol, results, f.lo, f.hi, now_ms())
            bars = [b for b in bars if f.covers(b.start)]
            if bars:
                report.fragments += write_fragments(lake, bars, source="rest")
            if rejects:
                _quarantine(lake, f, rejects)
        except (PolygonError, LakeError, OSError, layout.LayoutError) as exc:
            why = f"{type(exc).__name__}: {exc}"
            report.failed[f"{f.symbol} {f.day}"] = why
            for gid in f.gap_ids:
                errors.setdefault(gid, f"{f.symbol}: {why}")
            log.error("heal %s %s failed: %s", f.symbol, f.day, why)
            continue
        report.bars += len(bars)
        report.rejected += len(rejects)
        if progress is not None:
            progress(i, len(fetches))
    wanted = {gid for f in fetches for gid in f.gap_ids}
    # A gap outside every session has nothing to heal; one with no symbol known stays open.
    wanted |= {g.id for g in open_gaps if not _split_by_session(to_ms(g.start), to_ms(g.end))}
    healed = sorted(wanted - set(errors))
    if symbols is not None:  # a market-wide gap's other symbols are not healed by this run
        healed = sorted(g.id for g in open_gaps if g.symbol is not None and g.id in healed)
    gap_store.mark_healed(conn, healed)
    for gid, why in errors.items():
        gap_store.mark_failed(conn, gid, why)
    report.healed = len(healed)
    report.seconds = time.perf_counter() - started
    return report


def _hm(ms: int) -> str:
    return f"{_EPOCH + dt.timedelta(milliseconds=ms):%H:%M}Z"


def _quarantine(lake: Lake, f: Fetch, rejects: list[Reject]) -> None:
    key = layout.quarantine_part(QUARANTINE_SOURCE, f.day, f"{f.symbol}-{content_id(rejects)}")
    lake.write_table(key, quarantine_rows(rejects, QUARANTINE_SOURCE))
    log.warning("%d minute aggregates of %s %s rejected: %s", len(rejects), f.symbol, f.day, key)


# -- command line -----------------------------------------------------------------------------
def _since(text: str) -> dt.datetime:
    """``YYYY-MM-DD`` (New York midnight) or an ISO timestamp (UTC when naive)."""
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text)
            return dt.datetime.combine(day, dt.time(), tzinfo=calendar.NEW_YORK)
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        msg = f"invalid --since {text!r}: expected YYYY-MM-DD or an ISO timestamp"
        raise argparse.ArgumentTypeError(msg) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def build_parser() -> argparse.ArgumentParser:
    """The CLI."""
    p = argparse.ArgumentParser(
        prog="python -m dataflows.heal",
        description="Fill the live flow's recorded gaps (Postgres live_gaps) with Polygon's REST "
        "minute aggregates, written as bronze minute fragments with source=rest (they win over "
        "live bars at `batch.consolidate --minutes`); healed gaps are marked in live_gaps.",
    )
    p.add_argument(
        "--since",
        type=_since,
        metavar="WHEN",
        help="only gaps ending after this (YYYY-MM-DD or ISO timestamp; default: every open gap)",
    )
    p.add_argument(
        "--symbols",
        metavar="A,B",
        help="only these symbols; also the symbols a market-wide gap covers "
        "(default: LIVE_SYMBOLS, else the session's symbols in the lake)",
    )
    p.add_argument("--lake", metavar="URL", help="lake root (default: $LAKE_URL)")
    p.add_argument("--dry-run", action="store_true", help="list the fetches, fetch nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress lines")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def _symbols(p: argparse.ArgumentParser, text: str | None) -> frozenset[str] | None:
    if text is None:
        return None
    try:
        names = frozenset(layout.normalise_symbol(s) for s in text.split(",") if s.strip())
    except layout.LayoutError as exc:
        p.error(str(exc))
    if not names:
        p.error("--symbols names no symbol")
    return names


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI: 0 when every gap asked for was healed, 1 when anything failed, 2 for usage."""
    p = build_parser()
    ns = p.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if ns.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    install_redaction()
    only = _symbols(p, ns.symbols)
    from core.settings import LiveSettings
    from dataflows.connectors.polygon import PolygonGateway
    from dataflows.connectors.websocket import parse_symbols

    settings = LiveSettings()
    live = parse_symbols(settings.live_symbols)
    market = None if live == ("*",) else list(live)

    def progress(done: int, total: int) -> None:
        if not ns.no_progress and (done == total or done % 100 == 0):
            log.info("heal: %d/%d fetches", done, total)

    report = HealReport()
    try:
        lake = open_lake(ns.lake)
        gateway = PolygonGateway.from_settings(settings)
        try:
            with postgres.connect(postgres.database_url(settings), autocommit=True) as conn:
                postgres.migrate(conn)
                report = heal(
                    lake, conn, gateway.get_json, since=ns.since, symbols=only,
                    market_symbols=market, dry_run=ns.dry_run, progress=progress,
                )  # fmt: skip
        finally:
            gateway.close()
    except (PolygonError, psycopg.Error, LakeError, OSError) as exc:
        log.error("heal failed: %s: %s", type(exc).__name__, exc)
        job_counts.hand({**report.counts(), "error": str(exc)})
        return 1
    log.info("%s", report.summary())
    job_counts.hand(report.counts())
    if report.failed:
        log.error("heal: fetches failed for %s", ", ".join(sorted(report.failed)[:20]))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
