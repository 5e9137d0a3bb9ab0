"""Alerts in the live flow: rules evaluated where the data is, one stateful step.

    trade batches -----------------+
    final minute bars (revision 0) +--> alert engine (rules, states, series) --> events
    final 5m..4h bars (revision 0) +           ^ rule changes (Postgres + Redis notice)

Price levels on intraday timeframes are checked on every trade allowed to set a last price
(:attr:`dataflows.trades.TradeBatch.open_close`: odd lots and out-of-sequence prints never
fire); the bar kinds on each bar's first final version (revision 0). The engine
(:class:`core.alert_engine.Engine`: every rule's state, each symbol's last trade, each watched
series) is the step's snapshot, so after a crash the trades and bars replayed since the last
snapshot fire the same events with the same ids, which the sink stores once and delivers once.

Rules are not in the snapshot: they are read from Postgres at start, and :class:`RuleFeed`
applies changes while the flow runs: the API announces each change on ``{prefix}alert_rules``,
a thread reads that rule (and seeds the series it watches from the lake) and the step applies
it before its next item, well within a second; a full reload every ``ALERTS_RELOAD_S`` catches
a missed notice.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, Literal

import bytewax.operators as op
import numpy as np
import psycopg
from bytewax.dataflow import Stream
from bytewax.operators import StatefulLogic

from core.alert_delivery import RULES_CHANNEL
from core.alert_engine import Bar, BarSeries, Engine, KeyOf
from core.alerts import AlertEvent, Rule
from core.stores import alerts as store
from core.stores.postgres import migrate
from core.stores.redis import connect as redis_connect
from dataflows.minute_fold import MINUTE_MS, MinuteBar
from dataflows.rollups import RollupBar
from dataflows.trades import TradeBatch

log = logging.getLogger(__name__)
KEY: Final = "alerts"
Pair = tuple[str, str]
Seeder = Callable[[Iterable[Pair]], dict[Pair, BarSeries]]
Change = (
    tuple[Literal["all"], list[Rule], dict[Pair, BarSeries]]
    | tuple[Literal["one"], str, Rule | None, dict[Pair, BarSeries]]
)
Item = tuple[Literal["trades"], TradeBatch] | tuple[Literal["bars"], list[tuple[str, str, Bar]]]


@dataclass(frozen=True)
class FeedConfig:
    """Where rules live and how changes are announced."""

    database_url: str
    redis_url: str
    prefix: str = "condvest:"
    reload_s: float = 30.0


RUNNING: weakref.WeakSet[RuleFeed] = weakref.WeakSet()
"""Feeds following changes (a flow that failed before its end leaves its own running)."""


def stop_all() -> None:
    """Stop every feed of this process (after a flow that failed)."""
    for feed in list(RUNNING):
        feed.stop()


class RuleFeed:
    """Active rules from Postgres, and their changes as they happen (a daemon thread)."""

    def __init__(self, config: FeedConfig, seeder: Seeder | None = None) -> None:
        self.config = config
        self.seeder = seeder
        self.changes: queue.SimpleQueue[Change] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._redis = redis_connect(config.redis_url)
        self._pubsub = self._redis.pubsub()  # type: ignore[no-untyped-call]
        self._pubsub.subscribe(config.prefix + RULES_CHANNEL)  # before the load: none missed
        self._conn = psycopg.connect(config.database_url, autocommit=True)
        migrate(self._conn)
        self._version = store.rules_version(self._conn)
        self._thread: threading.Thread | None = None
        RUNNING.add(self)

    def initial(self, known: set[Pair]) -> tuple[list[Rule], dict[Pair, BarSeries]]:
        """Every active rule, and seeds of the series they watch that ``known`` lacks."""
        rules = store.active_rules(self._conn)
        return rules, self._seeds(rules, known)

    def _seeds(self, rules: Iterable[Rule], known: set[Pair]) -> dict[Pair, BarSeries]:
        pairs = {(r.symbol, r.timeframe) for r in rules if not r.on_trades} - known
        if not pairs or self.seeder is None:
            return {}
        try:
            return self.seeder(pairs)
        except Exception:  # a lake that cannot be read must not stop alerts: unseeded series
            log.exception("seeding %d alert series failed; they start without history", len(pairs))
            return {}

    def start(self) -> None:
        """Follow changes in the background."""
        self._thread = threading.Thread(target=self._run, name="alert-rules", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop following."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self._pubsub.close()
        self._redis.close()
        self._conn.close()
        RUNNING.discard(self)

    def _run(self) -> None:
        waited, backoff = 0.0, 1.0
        while not self._stop.is_set():
            try:
                msg = self._pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
                if msg is not None:
                    self._one(json.loads(msg["data"])["id"])
                    continue
                waited += 0.2
                if waited >= self.config.reload_s:
                    waited = 0.0
                    self._reload()
                backoff = 1.0
            except Exception as exc:  # keep following: the next reload repairs what was missed
                log.warning("following alert rule changes failed (%s); retrying", exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                waited = self.config.reload_s  # reload everything once it works again

    def _one(self, rule_id: str) -> None:
        found = store.active_rules(self._conn, ids=[rule_id])
        rule = found[0] if found else None
        seeds = self._seeds([rule], set()) if rule is not None else {}
        self.changes.put(("one", rule_id, rule, seeds))

    def _reload(self) -> None:
        version = store.rules_version(self._conn)
        if version != self._version:
            self._version = version
            rules = store.active_rules(self._conn)
            self.changes.put(("all", rules, self._seeds(rules, set())))


def apply_change(engine: Engine, change: Change) -> None:
    """A rule change, applied to the engine (seeds first, so the rule starts from history)."""
    if change[0] == "all":
        _, rules, seeds = change
        for (symbol, tf), series in seeds.items():
            engine.seed(symbol, tf, series)
        engine.set_rules(rules)
        return
    _, rule_id, rule, seeds = change
    for (symbol, tf), series in seeds.items():
        engine.seed(symbol, tf, series)
    if rule is None:
        engine.remove(rule_id)
    else:
        engine.add(rule)


def evaluate(engine: Engine, item: Item) -> list[AlertEvent]:
    """Events of one input item."""
    if item[0] == "trades":
        b = item[1]
        idx = np.flatnonzero(b.open_close)
        if len(idx) == 0:
            return []
        if len(idx) == len(b):
            sym, t, p = b.symbol, b.t, b.price
            names = KeyOf(b.t, b.exchange, b.id, b.sequence)
        else:
            sym, t, p = b.symbol[idx], b.t[idx], b.price[idx]
            names = KeyOf(t, b.exchange[idx], b.id[idx], b.sequence[idx])
        return engine.on_trade_batch(sym.tolist(), t.tolist(), p.tolist(), key_of=names)
    out: list[AlertEvent] = []
    for symbol, timeframe, bar in item[1]:
        out += engine.on_bar(symbol, timeframe, bar)
    return out


class _AlertLogic(StatefulLogic[Item, list[AlertEvent], Engine]):
    def __init__(self, engine: Engine, feed: RuleFeed | None) -> None:
        self.engine = engine
        self.feed = feed

    def on_item(self, value: Item) -> tuple[Iterable[list[AlertEvent]], bool]:
        if self.feed is not None:
            while True:
                try:
                    apply_change(self.engine, self.feed.changes.get_nowait())
                except queue.Empty:
                    break
        return [evaluate(self.engine, value)], StatefulLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[list[AlertEvent]], bool]:
        if self.feed is not None:  # a finite input is over: stop following rule changes
            self.feed.stop()
        return [], StatefulLogic.RETAIN

    def snapshot(self) -> Engine:
        return self.engine


def _trades(b: TradeBatch) -> Item:
    return ("trades", b)


def _minute_bars(item: tuple[str, list[MinuteBar]]) -> Item:
    return (
        "bars",
        [
            (b.symbol, "1m", Bar(b.start, b.start + MINUTE_MS, b.high, b.low, b.close, b.volume))
            for b in item[1]
            if b.revision == 0
        ],
    )


def _rollup_bars(bars: list[RollupBar]) -> Item:
    return (
        "bars",
        [
            (b.symbol, b.interval, Bar(b.start, b.end, b.high, b.low, b.close, b.volume))
            for b in bars
            if b.final and b.revision == 0
        ],
    )


def _key(_: Item) -> str:
    return KEY


def _value(item: tuple[str, list[AlertEvent]]) -> list[AlertEvent]:
    return item[1]


def _nonempty(events: list[AlertEvent]) -> bool:
    return bool(events)


def alert_stream(
    step_id: str,
    trades: Stream[TradeBatch],
    minutes: Stream[tuple[str, list[MinuteBar]]],
    rollups: Stream[list[RollupBar]] | None,
    make_feed: Callable[[], RuleFeed | None],
    *,
    keep_empty: bool = True,
) -> Stream[list[AlertEvent]]:
    """Events per input item (empty lists too when ``keep_empty``: they pace the sink)."""
    inputs = [
        op.map(f"{step_id}_trades", trades, _trades),
        op.map(f"{step_id}_minutes", minutes, _minute_bars),
    ]
    if rollups is not None:
        inputs.append(op.map(f"{step_id}_rollups", rollups, _rollup_bars))
    merged = op.key_on(f"{step_id}_key", op.merge(f"{step_id}_merge", *inputs), _key)

    def build(resume: Engine | None) -> _AlertLogic:
        engine = resume or Engine()
        feed = make_feed()
        if feed is not None:
            rules, seeds = feed.initial({k for k, s in engine.series.items() if s.last})
            apply_change(engine, ("all", rules, seeds))
            feed.start()
        return _AlertLogic(engine, feed)

    events = op.map(f"{step_id}_values", op.stateful(f"{step_id}_eval", merged, build), _value)
    return events if keep_empty else op.filter(f"{step_id}_events", events, _nonempty)


def feed_factory(config: FeedConfig, seeder: Seeder | None) -> Callable[[], RuleFeed]:
    """A factory the step calls once it runs (connections are opened in the worker)."""

    def make() -> RuleFeed:
        return RuleFeed(config, seeder)

    return make
