"""Alert rules: kinds, parameters, the firing state machine and deterministic event ids.

Pure (no I/O, no clock): the live flow, the daily pipeline and the API share these semantics.

Every kind reduces an observation (a trade, or a final bar with its indicators) to a *margin*
``m`` in the kind's own units; the condition holds when ``m >= 0`` (``m > 0`` for the strict
kinds: a cross of two lines, leaving a band). A rule

- fires on the transition to true, and never again while the condition holds;
- re-arms when the condition turns false, or with ``hysteresis`` h > 0 only once ``m < -h``
  (the value is back by more than h on the other side), so noise around a level does not
  re-arm it;
- with a ``cooldown`` of c seconds does not fire again within c seconds (event time) of its
  last event: an armed rule whose condition holds inside the cooldown fires at the first
  observation after it while the condition still holds;
- starts from the last observation before it was created (or, when there is none, its first
  one): a rule created while its condition already holds waits for the next transition;
- skips observations where its value is undefined (too little history), keeping its state.

An event's id is a digest of the rule's id and its observation (a trade's time, exchange and
id; a bar's timeframe and start), so a replay after a crash yields the same ids.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, NoReturn

from core.indicators import EMA_SPANS
from core.isotime import ms_iso

INTRADAY: Final = ("1m", "5m", "15m", "30m", "1h", "2h", "4h")
DAILY: Final = ("1d", "3d", "5d", "8d", "13d", "21d", "34d")
TIMEFRAMES: Final = INTRADAY + DAILY
KINDS: Final = (
    "price_cross", "percent_move", "volume_spike", "ema_cross", "rsi_exit", "vegas_cross",
)  # fmt: skip
STRICT: Final = frozenset({"ema_cross", "rsi_exit", "vegas_cross"})
"""Kinds whose condition is ``m > 0``: a line over another, a value out of a band."""
MAX_WINDOW: Final = 500
"""Longest look-back (bars) of percent_move and volume_spike."""
MAX_COOLDOWN_S: Final = 30 * 86_400
Kind = Literal[
    "price_cross", "percent_move", "volume_spike", "ema_cross", "rsi_exit", "vegas_cross"
]


class RuleError(ValueError):
    """An invalid rule; ``field`` names what is wrong (``params.level``, ``timeframe``...)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def invalid(field: str, message: str) -> NoReturn:
    """Raise :class:`RuleError` naming ``field``."""
    raise RuleError(field, message)


@dataclass(frozen=True, slots=True)
class Rule:
    """An alert rule as stored (``params`` already validated by :func:`check_params`)."""

    id: str
    owner: str
    symbol: str
    timeframe: str
    kind: str
    params: Mapping[str, Any]
    cooldown_s: int = 0
    created_ms: int = 0
    """Creation time, Unix ms: observations before it only set the rule's starting side."""
    expires_ms: int | None = None
    active: bool = True

    @property
    def on_trades(self) -> bool:
        """Evaluated on every trade (a price level on an intraday timeframe)."""
        return self.kind == "price_cross" and self.timeframe in INTRADAY

    @property
    def hysteresis(self) -> float:
        """The re-arm band, in the kind's units."""
        return float(self.params.get("hysteresis", 0.0))

    def live_at(self, t_ms: int) -> bool:
        """Whether the rule still evaluates an observation at ``t_ms`` (not expired)."""
        return self.active and (self.expires_ms is None or t_ms < self.expires_ms)


# -- validation --------------------------------------------------------------------------------
def _number(params: Mapping[str, Any], name: str, default: float | None = None) -> float:
    value = params.get(name, default)
    if value is None:
        invalid(f"params.{name}", "required")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        invalid(f"params.{name}", "must be a finite number")
    return float(value)


def _integer(params: Mapping[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        invalid(f"params.{name}", "must be an integer")
    if not lo <= value <= hi:
        invalid(f"params.{name}", f"must be between {lo} and {hi}")
    return int(value)


def _choice(params: Mapping[str, Any], name: str, choices: tuple[str, ...], default: str) -> str:
    value = params.get(name, default)
    if value not in choices:
        invalid(f"params.{name}", f"must be one of {', '.join(choices)}")
    return str(value)


def _positive(name: str, value: float) -> float:
    if value <= 0:
        invalid(f"params.{name}", "must be positive")
    return value


ALLOWED: Final[dict[str, frozenset[str]]] = {
    "price_cross": frozenset({"level", "direction"}),
    "percent_move": frozenset({"percent", "bars", "direction"}),
    "volume_spike": frozenset({"factor", "bars"}),
    "ema_cross": frozenset({"fast", "slow", "direction"}),
    "rsi_exit": frozenset({"lower", "upper", "direction"}),
    "vegas_cross": frozenset({"direction"}),
}
"""Parameters of each kind, besides ``hysteresis`` which every kind takes."""


def check_params(kind: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with defaults filled in; :class:`RuleError` naming the first bad field."""
    if kind not in KINDS:
        invalid("kind", f"must be one of {', '.join(KINDS)}")
    if not isinstance(params, Mapping):
        invalid("params", "must be an object")
    unknown = sorted(set(params) - ALLOWED[kind] - {"hysteresis"})
    if unknown:
        invalid(f"params.{unknown[0]}", f"is not a parameter of {kind}")
    out: dict[str, Any] = {}
    if kind == "price_cross":
        out["level"] = _positive("level", _number(params, "level"))
        out["direction"] = _choice(params, "direction", ("above", "below"), "above")
    elif kind == "percent_move":
        out["percent"] = _positive("percent", _number(params, "percent"))
        out["bars"] = _integer(params, "bars", 1, 1, MAX_WINDOW)
        out["direction"] = _choice(params, "direction", ("up", "down", "any"), "any")
    elif kind == "volume_spike":
        out["factor"] = _positive("factor", _number(params, "factor"))
        out["bars"] = _integer(params, "bars", 20, 1, MAX_WINDOW)
    elif kind == "ema_cross":
        spans = tuple(str(n) for n in EMA_SPANS)
        fast = int(_choice({k: str(v) for k, v in params.items()}, "fast", spans, "8"))
        slow = int(_choice({k: str(v) for k, v in params.items()}, "slow", spans, "21"))
        if fast >= slow:
            invalid("params.fast", "must be a shorter span than params.slow")
        out.update(fast=fast, slow=slow)
        out["direction"] = _choice(params, "direction", ("above", "below"), "above")
    elif kind == "rsi_exit":
        lower, upper = _number(params, "lower", 30.0), _number(params, "upper", 70.0)
        if not 0 <= lower < upper <= 100:
            invalid("params.lower", "must satisfy 0 <= lower < upper <= 100")
        out.update(lower=lower, upper=upper)
        out["direction"] = _choice(params, "direction", ("up", "down", "any"), "any")
    else:  # vegas_cross
        out["direction"] = _choice(params, "direction", ("above", "below"), "above")
    h = _number(params, "hysteresis", 0.0)
    if h < 0:
        invalid("params.hysteresis", "must not be negative")
    out["hysteresis"] = h
    return out


def check_timeframe(timeframe: str) -> str:
    """The timeframe, or :class:`RuleError`."""
    if timeframe not in TIMEFRAMES:
        invalid("timeframe", f"must be one of {', '.join(TIMEFRAMES)}")
    return timeframe


def check_cooldown(seconds: Any) -> int:
    """Cooldown seconds, or :class:`RuleError`."""
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        invalid("cooldown", "must be an integer number of seconds")
    if not 0 <= seconds <= MAX_COOLDOWN_S:
        invalid("cooldown", f"must be between 0 and {MAX_COOLDOWN_S}")
    return seconds


# -- observations and margins ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class BarView:
    """A final bar as a rule sees it: its values and look-back over the bars before it."""

    start_ms: int
    end_ms: int
    key: str
    """Observation key for event ids: ``{timeframe}:{start}``."""
    close: float
    volume: float
    indicators: Mapping[str, float | None]
    prior_closes: tuple[float, ...] = ()
    """Closes of the bars before this one, oldest first (at most :data:`MAX_WINDOW`)."""
    prior_volumes: tuple[float, ...] = ()


def price_margin(rule: Rule, price: float) -> float:
    """price_cross: distance past the level, positive on the alert's side."""
    level = float(rule.params["level"])
    return price - level if rule.params["direction"] == "above" else level - price


def bar_value(rule: Rule, bar: BarView) -> tuple[float, float] | None:
    """(margin, reported value) of a bar-based rule, or None while undefined."""
    p, kind = rule.params, rule.kind
    if kind == "price_cross":
        return price_margin(rule, bar.close), bar.close
    if kind == "percent_move":
        n = int(p["bars"])
        if len(bar.prior_closes) < n or bar.prior_closes[-n] <= 0:
            return None
        move = 100.0 * (bar.close / bar.prior_closes[-n] - 1.0)
        threshold = float(p["percent"])
        d = p["direction"]
        m = (
            move - threshold
            if d == "up"
            else -move - threshold
            if d == "down"
            else abs(move) - threshold
        )
        return m, move
    if kind == "volume_spike":
        n = int(p["bars"])
        if len(bar.prior_volumes) < n:
            return None
        mean = math.fsum(bar.prior_volumes[-n:]) / n
        if mean <= 0:
            return None
        ratio = bar.volume / mean
        return ratio - float(p["factor"]), ratio
    if kind == "ema_cross":
        fast, slow = bar.indicators.get(f"ema_{p['fast']}"), bar.indicators.get(f"ema_{p['slow']}")
        if fast is None or slow is None:
            return None
        gap = fast - slow
        return (gap if p["direction"] == "above" else -gap), gap
    if kind == "rsi_exit":
        rsi = bar.indicators.get("rsi_14")
        if rsi is None:
            return None
        up, down = rsi - float(p["upper"]), float(p["lower"]) - rsi
        d = p["direction"]
        return (up if d == "up" else down if d == "down" else max(up, down)), rsi
    # vegas_cross
    e144, e169 = bar.indicators.get("ema_144"), bar.indicators.get("ema_169")
    if e144 is None or e169 is None:
        return None
    if p["direction"] == "above":
        return bar.close - max(e144, e169), bar.close
    return min(e144, e169) - bar.close, bar.close


# -- the state machine -------------------------------------------------------------------------
@dataclass(slots=True)
class Arm:
    """One rule's state: armed (None until its first observation) and its last event time."""

    armed: bool | None = None
    last_fired_ms: int | None = None


def holds(rule: Rule, margin: float) -> bool:
    """The rule's condition at ``margin``."""
    return margin > 0 if rule.kind in STRICT else margin >= 0


def released(rule: Rule, margin: float) -> bool:
    """Whether ``margin`` re-arms the rule (false, and past the hysteresis band)."""
    h = rule.hysteresis
    return margin < -h if h > 0 else not holds(rule, margin)


def baseline(rule: Rule, arm: Arm, margin: float) -> None:
    """Take an observation from before the rule existed: it only sets the starting side."""
    arm.armed = not holds(rule, margin)


def step(rule: Rule, arm: Arm, margin: float, t_ms: int) -> bool:
    """Advance ``arm`` by one observation at event time ``t_ms``; True when the rule fires."""
    if arm.armed is None:  # nothing seen before: this observation only sets the side
        baseline(rule, arm, margin)
        return False
    if arm.armed:
        if not holds(rule, margin):
            return False
        if arm.last_fired_ms is not None and t_ms - arm.last_fired_ms < rule.cooldown_s * 1000:
            return False  # stays armed: fires after the cooldown if the condition still holds
        arm.armed = False
        arm.last_fired_ms = t_ms
        return True
    if released(rule, margin):
        arm.armed = True
    return False


# -- events ------------------------------------------------------------------------------------
def event_id(rule_id: str, observation: str) -> str:
    """Deterministic id of the event ``rule_id`` fired on ``observation``."""
    return hashlib.sha256(f"{rule_id}|{observation}".encode()).hexdigest()[:32]


def trade_key(t_ms: int, exchange: int, trade_id: str | None, sequence: int) -> str:
    """Observation key of a trade: SIP time, exchange and id (or sequence)."""
    return f"trade:{t_ms}:{exchange}:{trade_id if trade_id is not None else f's{sequence}'}"


def bar_key(timeframe: str, start_ms: int) -> str:
    """Observation key of a bar."""
    return f"bar:{timeframe}:{start_ms}"


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """A fired rule."""

    id: str
    rule_id: str
    owner: str
    symbol: str
    timeframe: str
    kind: str
    event_ms: int
    """Event time of the observation (trade time; bar end)."""
    value: float
    message: str
    observation: str
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The document delivered on the WebSocket, Redis and SNS."""
        return {
            "id": self.id,
            "rule_id": self.rule_id,
            "owner": self.owner,
            "symbol": self.symbol,
            "timeframe": self.timeframe,
            "kind": self.kind,
            "event_at": ms_iso(self.event_ms),
            "value": self.value,
            "message": self.message,
        }


def describe(rule: Rule, value: float) -> str:
    """The human message of an event."""
    p, s, tf = rule.params, rule.symbol, rule.timeframe
    if rule.kind == "price_cross":
        on = "trade" if rule.on_trades else f"{tf} close"
        return f"{s} {on} {value:g} crossed {p['direction']} {p['level']:g}"
    if rule.kind == "percent_move":
        return f"{s} moved {value:+.2f}% over {p['bars']} {tf} bars (threshold {p['percent']:g}%)"
    if rule.kind == "volume_spike":
        return f"{s} {tf} volume {value:.2f}x the mean of the previous {p['bars']} bars"
    if rule.kind == "ema_cross":
        return f"{s} {tf} EMA{p['fast']} crossed {p['direction']} EMA{p['slow']} (gap {value:g})"
    if rule.kind == "rsi_exit":
        return f"{s} {tf} RSI(14) {value:.2f} left the {p['lower']:g}-{p['upper']:g} band"
    return f"{s} {tf} close {value:g} crossed {p['direction']} the Vegas channel"


def fire(rule: Rule, observation: str, t_ms: int, value: float) -> AlertEvent:
    """The event of ``rule`` firing on ``observation``."""
    return AlertEvent(
        id=event_id(rule.id, observation),
        rule_id=rule.id,
        owner=rule.owner,
        symbol=rule.symbol,
        timeframe=rule.timeframe,
        kind=rule.kind,
        event_ms=t_ms,
        value=value,
        message=describe(rule, value),
        observation=observation,
    )
