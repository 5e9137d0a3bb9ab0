"""The alert evaluator: rules indexed by symbol, their states, and the series they watch.

Pure and picklable, so the live flow snapshots it for recovery and the daily pipeline replays it
over a rule's bars. Rules come and go (:meth:`Engine.set_rules`, :meth:`Engine.add`,
:meth:`Engine.remove`); their states (:class:`core.alerts.Arm`), each symbol's last trade and
each watched bar series survive that.

Trades: only rules on trades of the trade's symbol are looked at, and a price band per symbol
(the nearest level any of them could react to) lets most trades pass with one comparison.
Bars: one :class:`BarSeries` per (symbol, timeframe) with rules, its indicators advanced by
:class:`core.indicators.State` (seeded from history, so an EMA is right from the first bar).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from core import alerts, indicators
from core.alerts import AlertEvent, Arm, BarView, Rule

INF = math.inf
Column = Sequence[Any] | npt.NDArray[Any]
"""A list or a numpy column (the live flow's trade batches are numpy)."""


class Bar(NamedTuple):
    """A final bar: window [start, end) in Unix ms, and the values rules read."""

    start: int
    end: int
    high: float
    low: float
    close: float
    volume: float


@dataclass
class BarSeries:
    """One (symbol, timeframe)'s indicator state and look-back, up to its newest bar."""

    state: indicators.State = field(default_factory=indicators.State.empty)
    last_start: int = -(2**62)
    closes: deque[float] = field(default_factory=lambda: deque(maxlen=alerts.MAX_WINDOW))
    volumes: deque[float] = field(default_factory=lambda: deque(maxlen=alerts.MAX_WINDOW))
    last: BarView | None = None

    @classmethod
    def of_history(
        cls,
        timeframe: str,
        starts: Column,
        ends: Column,
        high: Column,
        low: Column,
        close: Column,
        volume: Column,
    ) -> BarSeries:
        """A series seeded from its bars so far (oldest first)."""
        out = cls()
        n = len(close)
        if n == 0:
            return out
        h, lo, c = (np.asarray(x, dtype=np.float64) for x in (high, low, close))
        computed = indicators.compute(h, lo, c, np.array([0, n], dtype=np.int64))
        out.state = indicators.State(tuple(float(x) for x in computed.last[0]))
        values = {k: _opt(float(v[-1])) for k, v in computed.values.items()}
        tail = max(0, n - 1 - alerts.MAX_WINDOW)
        out.closes.extend(float(x) for x in close[tail : n - 1])
        out.volumes.extend(float(x) for x in volume[tail : n - 1])
        out.last = BarView(
            start_ms=int(starts[-1]),
            end_ms=int(ends[-1]),
            key=alerts.bar_key(timeframe, int(starts[-1])),
            close=float(close[-1]),
            volume=float(volume[-1]),
            indicators=values,
            prior_closes=tuple(out.closes),
            prior_volumes=tuple(out.volumes),
        )
        out.closes.append(float(close[-1]))
        out.volumes.append(float(volume[-1]))
        out.last_start = int(starts[-1])
        return out

    def push(self, timeframe: str, bar: Bar) -> BarView | None:
        """Fold a final bar in; its view, or None when the series already holds it."""
        start, end, high, low, close, volume = bar
        if start <= self.last_start:
            return None
        values, self.state = self.state.advance(high, low, close)
        view = BarView(
            start_ms=start,
            end_ms=end,
            key=alerts.bar_key(timeframe, start),
            close=close,
            volume=volume,
            indicators=values,
            prior_closes=tuple(self.closes),
            prior_volumes=tuple(self.volumes),
        )
        self.closes.append(close)
        self.volumes.append(volume)
        self.last_start, self.last = start, view
        return view


def _opt(v: float) -> float | None:
    return None if math.isnan(v) else v


@dataclass
class Engine:
    """Every rule's state and what it watches; evaluates trades and final bars."""

    rules: dict[str, Rule] = field(default_factory=dict)
    arms: dict[str, Arm] = field(default_factory=dict)
    on_trades: dict[str, list[Rule]] = field(default_factory=dict)
    on_bars: dict[tuple[str, str], list[Rule]] = field(default_factory=dict)
    last_trade: dict[str, tuple[int, float]] = field(default_factory=dict)
    """Per symbol: (SIP ms, price) of its newest trade allowed to set a last price."""
    series: dict[tuple[str, str], BarSeries] = field(default_factory=dict)
    bands: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Per symbol with trade rules: prices strictly between these change no rule's state."""

    # -- rules -----------------------------------------------------------------------------
    def set_rules(self, rules: Iterable[Rule]) -> None:
        """Replace the rule set; states of rules kept are kept."""
        wanted = {r.id: r for r in rules if r.active}
        for rid in [rid for rid in self.rules if rid not in wanted]:
            self.remove(rid)
        for rule in wanted.values():
            if rule != self.rules.get(rule.id):
                self.add(rule)

    def add(self, rule: Rule) -> None:
        """Add (or replace) a rule; it starts from the last observation before it, if any."""
        if rule.id in self.rules:
            self.remove(rule.id, keep_state=True)
        if not rule.active:
            return
        self.rules[rule.id] = rule
        arm = self.arms.setdefault(rule.id, Arm())
        if rule.on_trades:
            self.on_trades.setdefault(rule.symbol, []).append(rule)
            last = self.last_trade.get(rule.symbol)
            if arm.armed is None and last is not None and last[0] < rule.created_ms:
                alerts.baseline(rule, arm, alerts.price_margin(rule, last[1]))
            self._band(rule.symbol)
        else:
            key = (rule.symbol, rule.timeframe)
            self.on_bars.setdefault(key, []).append(rule)
            series = self.series.get(key)
            if arm.armed is None and series is not None and series.last is not None:
                got = alerts.bar_value(rule, series.last)
                if got is not None and series.last.end_ms <= rule.created_ms:
                    alerts.baseline(rule, arm, got[0])

    def remove(self, rule_id: str, *, keep_state: bool = False) -> None:
        """Drop a rule (and, unless ``keep_state``, its state)."""
        rule = self.rules.pop(rule_id, None)
        if not keep_state:
            self.arms.pop(rule_id, None)
        if rule is None:
            return
        if rule.on_trades:
            kept = [r for r in self.on_trades.get(rule.symbol, []) if r.id != rule_id]
            if kept:
                self.on_trades[rule.symbol] = kept
                self._band(rule.symbol)
            else:
                self.on_trades.pop(rule.symbol, None)
                self.bands.pop(rule.symbol, None)
        else:
            key = (rule.symbol, rule.timeframe)
            kept = [r for r in self.on_bars.get(key, []) if r.id != rule_id]
            if kept:
                self.on_bars[key] = kept
            else:
                self.on_bars.pop(key, None)

    def watched_series(self) -> set[tuple[str, str]]:
        """(symbol, timeframe) pairs some bar rule watches."""
        return set(self.on_bars)

    def seed(self, symbol: str, timeframe: str, series: BarSeries) -> None:
        """Install a series seeded from history, unless the series already has bars.

        Bars already there came live or from a snapshot: replacing them would skip the bars a
        replay after recovery brings again.
        """
        have = self.series.get((symbol, timeframe))
        if have is not None and have.last is not None:
            return
        self.series[(symbol, timeframe)] = series
        for rule in self.on_bars.get((symbol, timeframe), []):
            arm = self.arms[rule.id]
            if arm.armed is None and series.last is not None:
                got = alerts.bar_value(rule, series.last)
                if got is not None and series.last.end_ms <= rule.created_ms:
                    alerts.baseline(rule, arm, got[0])

    # -- trades ----------------------------------------------------------------------------
    def _band(self, symbol: str) -> None:
        lo, hi = -INF, INF
        last = self.last_trade.get(symbol)
        for rule in self.on_trades.get(symbol, []):
            arm = self.arms[rule.id]
            if arm.armed is None or last is None or last[0] < rule.created_ms:
                lo, hi = INF, -INF  # a rule still taking its start: look at every trade
                break
            level, above = float(rule.params["level"]), rule.params["direction"] == "above"
            h = rule.hysteresis
            if arm.armed:
                if above:
                    hi = min(hi, level)
                else:
                    lo = max(lo, level)
            elif above:
                lo = max(lo, level - h)
            else:
                hi = min(hi, level + h)
        self.bands[symbol] = (lo, hi)

    def on_trade_batch(
        self,
        symbols: Sequence[str],
        times: Sequence[int],
        prices: Sequence[float],
        keys: Sequence[str] | None = None,
        *,
        key_of: KeyOf | None = None,
    ) -> list[AlertEvent]:
        """Evaluate trades in order (only those allowed to set a last price should be given).

        ``keys[i]`` (or ``key_of(i)``, called only for a trade that fires) names trade i.
        """
        events: list[AlertEvent] = []
        bands, last = self.bands, self.last_trade
        for i, sym in enumerate(symbols):
            band = bands.get(sym)
            if band is not None:
                p = prices[i]
                if not band[0] < p < band[1]:
                    t = int(times[i])
                    last[sym] = (t, p)
                    key = keys[i] if keys is not None else None
                    events += self._trade(sym, t, p, key, i, key_of)
                    continue
            last[sym] = (int(times[i]), prices[i])
        return events

    def _trade(
        self, symbol: str, t: int, price: float, key: str | None, i: int, key_of: KeyOf | None
    ) -> list[AlertEvent]:
        out: list[AlertEvent] = []
        for rule in self.on_trades[symbol]:
            arm = self.arms[rule.id]
            m = alerts.price_margin(rule, price)
            if t < rule.created_ms:
                alerts.baseline(rule, arm, m)
            elif rule.live_at(t) and alerts.step(rule, arm, m, t):
                name = key if key is not None else key_of(i) if key_of is not None else str(t)
                out.append(alerts.fire(rule, name, t, price))
        self._band(symbol)
        return out

    # -- bars ------------------------------------------------------------------------------
    def on_bar(self, symbol: str, timeframe: str, bar: Bar) -> list[AlertEvent]:
        """Evaluate a final bar (first version only: a bar already seen is ignored)."""
        key = (symbol, timeframe)
        rules = self.on_bars.get(key)
        if not rules:
            return []
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = BarSeries()
        view = series.push(timeframe, bar)
        if view is None:
            return []
        return self.on_view(rules, view)

    def on_view(self, rules: Sequence[Rule], view: BarView) -> list[AlertEvent]:
        """Evaluate one bar (already folded into its series) against ``rules``."""
        out: list[AlertEvent] = []
        for rule in rules:
            got = alerts.bar_value(rule, view)
            if got is None:
                continue
            margin, value = got
            arm = self.arms.setdefault(rule.id, Arm())
            if view.end_ms <= rule.created_ms:
                alerts.baseline(rule, arm, margin)
            elif rule.live_at(view.end_ms) and alerts.step(rule, arm, margin, view.end_ms):
                out.append(alerts.fire(rule, view.key, view.end_ms, value))
        return out


class KeyOf:
    """Names trade i of a batch lazily (building every trade's key would cost per trade)."""

    def __init__(
        self, times: Column, exchanges: Column, ids: Column, sequences: Column,
    ) -> None:  # fmt: skip
        self.times, self.exchanges, self.ids, self.sequences = times, exchanges, ids, sequences

    def __call__(self, i: int) -> str:
        """The observation key of trade ``i``."""
        trade_id = self.ids[i]
        return alerts.trade_key(
            int(self.times[i]),
            int(self.exchanges[i]),
            None if trade_id is None else str(trade_id),
            int(self.sequences[i]),
        )
