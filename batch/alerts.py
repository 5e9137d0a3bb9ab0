"""``python -m batch.alerts``: daily and Fibonacci alert rules, evaluated after gold.

Rules on 1d and the Fibonacci timeframes are evaluated on final bars only, where those bars
are: the consolidated daily rows (every settled session) and the complete Fibonacci bars of
silver, split-adjusted as gold's (so an EMA here is gold's EMA: the same kernels over the same
bars). Each (symbol, timeframe) with rules is replayed from its history, seeded in one pass up
to the bar before the earliest rule's creation and then bar by bar, so every run derives the
same events with the same ids; the ones already stored are skipped, the rest stored and
delivered (:class:`core.alert_delivery.Delivery`). A rerun therefore delivers nothing twice.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads

from batch.engine import common
from core import adjustments, alerts, calendar, layout
from core.alert_delivery import Delivery
from core.alert_engine import Bar, BarSeries, Engine
from core.alerts import AlertEvent, Rule
from core.isotime import ms_iso
from core.lake import Lake
from core.settings import BatchSettings
from core.stores import alerts as store
from core.stores import postgres
from core.stores.redis import connect as redis_connect
from core.stores.redis import redis_url

log = logging.getLogger("batch.alerts")


@dataclass(frozen=True)
class Bars:
    """One series' final bars, oldest first, stamped by the first day's open and last close."""

    start: list[int]
    end: list[int]
    high: list[float]
    low: list[float]
    close: list[float]
    volume: list[float]

    def __len__(self) -> int:
        return len(self.start)


def _ms(t: dt.datetime) -> int:
    return int(t.timestamp() * 1000)


def _span(first: dt.date, last: dt.date) -> tuple[int, int]:
    return _ms(calendar.session_open(first)), _ms(calendar.session_close(last))


def daily_bars(lake: Lake, book: adjustments.SplitBook, symbol: str) -> Bars:
    """The symbol's consolidated daily rows, split-adjusted (prices x S(d), volume / S(d))."""
    key = layout.consolidated(symbol)
    if not lake.exists(key):
        return Bars([], [], [], [], [], [])
    t = lake.read_table(key, ["date", "high", "low", "close", "volume"]).sort_by("date")
    days = t["date"].to_pylist()
    factor = adjustments.split_factors(
        np.array([adjustments.to_days(d) for d in days], np.int64), book.of(symbol)
    )
    cols = {c: t[c].to_numpy() for c in ("high", "low", "close", "volume")}
    spans = [_span(d, d) for d in days]
    return Bars(
        [s for s, _ in spans], [e for _, e in spans],
        list(cols["high"] * factor), list(cols["low"] * factor), list(cols["close"] * factor),
        list(cols["volume"] / factor),
    )  # fmt: skip


def fib_bars(lake: Lake, n: int, symbols: Sequence[str]) -> dict[str, Bars]:
    """Complete bars of interval ``n`` from silver (already split-adjusted), per symbol."""
    keys = [e.key for e in lake.list(layout.silver_dir(n) + "/", suffix=".parquet")]
    if not keys:
        return {}
    ds = pads.dataset([lake.path(k) for k in keys], format="parquet", filesystem=lake.fs)
    cols = ["symbol", "start_date", "end_date", "high", "low", "close", "volume", "complete"]
    t = ds.to_table(
        columns=cols,
        filter=pads.field("symbol").isin(list(symbols))
        & (pads.field("complete") == pa.scalar(True)),
    ).sort_by([("symbol", "ascending"), ("start_date", "ascending")])
    out: dict[str, Bars] = {}
    rows = defaultdict(list)
    for r in t.to_pylist():
        rows[r["symbol"]].append(r)
    for symbol, rs in rows.items():
        spans = [_span(r["start_date"], r["end_date"]) for r in rs]
        out[symbol] = Bars(
            [s for s, _ in spans], [e for _, e in spans], [r["high"] for r in rs],
            [r["low"] for r in rs], [r["close"] for r in rs], [r["volume"] for r in rs],
        )  # fmt: skip
    return out


def evaluate(rules: Sequence[Rule], timeframe: str, bars: Bars) -> list[AlertEvent]:
    """Every event ``rules`` (one symbol, one timeframe) fire over ``bars``."""
    if not rules or not len(bars):
        return []
    earliest = min(r.created_ms for r in rules)
    cut = int(np.searchsorted(np.asarray(bars.end), earliest, side="right"))
    engine = Engine()
    symbol = rules[0].symbol
    if cut:
        engine.seed(symbol, timeframe, BarSeries.of_history(
            timeframe, bars.start[:cut], bars.end[:cut], bars.high[:cut], bars.low[:cut],
            bars.close[:cut], bars.volume[:cut],
        ))  # fmt: skip
    for rule in rules:
        engine.add(rule)
    events: list[AlertEvent] = []
    for i in range(cut, len(bars)):
        bar = Bar(bars.start[i], bars.end[i], bars.high[i], bars.low[i], bars.close[i],
                  bars.volume[i])  # fmt: skip
        events += engine.on_bar(symbol, timeframe, bar)
    return events


@dataclass
class Report:
    """What a run did."""

    rules: int = 0
    series: int = 0
    events: int = 0
    delivered: int = 0
    failed: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        """One line."""
        return (
            f"{self.rules} rules over {self.series} series: {self.events} events, "
            f"{self.delivered} delivered now, {len(self.failed)} series failed"
        )


def run(
    lake: Lake, rules: Iterable[Rule], timeframes: Sequence[str]
) -> tuple[Report, list[AlertEvent]]:
    """Events of every rule on ``timeframes`` (nothing stored)."""
    groups: dict[tuple[str, str], list[Rule]] = defaultdict(list)
    for r in rules:
        if r.timeframe in timeframes:
            groups[(r.symbol, r.timeframe)].append(r)
    report = Report(rules=sum(map(len, groups.values())), series=len(groups))
    book = adjustments.split_book(lake)
    fib: dict[str, dict[str, Bars]] = {}
    for tf in {tf for _, tf in groups} - {"1d"}:
        fib[tf] = fib_bars(lake, int(tf[:-1]), sorted({s for s, t in groups if t == tf}))
    events: list[AlertEvent] = []
    for (symbol, tf), group in sorted(groups.items()):
        try:
            bars = daily_bars(lake, book, symbol) if tf == "1d" else fib[tf].get(symbol)
            events += evaluate(group, tf, bars or Bars([], [], [], [], [], []))
        except (OSError, ValueError, pa.ArrowException) as exc:
            report.failed[f"{symbol} {tf}"] = f"{type(exc).__name__}: {exc}"
    report.events = len(events)
    return report, events


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m batch.alerts``."""
    p = common.parser(
        "alerts",
        "Evaluate the daily and Fibonacci alert rules on final bars; store and deliver the "
        "events not delivered yet (a rerun delivers nothing twice).",
    )
    p.add_argument(
        "--timeframes", metavar="1d,8d", default=",".join(alerts.DAILY),
        help="timeframes to evaluate (default: 1d and the six Fibonacci lengths)",
    )  # fmt: skip
    args = common.parse(p, argv)
    timeframes = [t.strip() for t in args.extra.timeframes.split(",") if t.strip()]
    bad = [t for t in timeframes if t not in alerts.DAILY]
    if bad:
        p.error(f"unsupported timeframes {bad}; choose from {', '.join(alerts.DAILY)}")
    settings = BatchSettings()
    with common.recorded("alerts") as counts:
        with postgres.connect(postgres.database_url(settings), autocommit=True) as conn:
            postgres.migrate(conn)
            found = store.active_rules(conn, timeframes=timeframes)
            mine = set(common.select_symbols(args, sorted({r.symbol for r in found})))
            rules = [r for r in found if r.symbol in mine]
            report, events = run(args.lake, rules, timeframes)
            if not args.dry_run and events:
                delivery = Delivery(
                    redis_connect(redis_url(settings)), settings.redis_prefix,
                    max_per_minute=settings.alerts_max_per_minute,
                    sns_topic_arn=settings.alerts_sns_topic_arn,
                    endpoint_url=settings.aws_endpoint_url, region=settings.aws_default_region,
                )  # fmt: skip
                report.delivered = len(delivery.deliver(conn, events))
                delivery.redis.close()
        counts.update(
            rules=report.rules, series=report.series, events=report.events,
            delivered=report.delivered, failed=len(report.failed),
        )  # fmt: skip
        if args.dry_run:
            for e in events:
                print(f"{ms_iso(e.event_ms)}  {e.rule_id}  {e.message}")
        print(report.summary())
        common.fail_on_symbols(report.failed, "series failed")
    return 0


if __name__ == "__main__":
    sys.exit(common.main_wrapper(main)(None))
