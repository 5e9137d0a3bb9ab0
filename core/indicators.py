"""Technical indicators of a bar series, exact and resumable: the one implementation.

Batch gold (every symbol's daily and Fibonacci bars) and the live flow (one symbol's intraday
bars as they form) both call this module, so a value means the same everywhere.

Definitions (each matches the pandas expression named, to the last bit):

- ``ema_n`` for n in :data:`EMA_SPANS`: ``close.ewm(span=n, adjust=False, min_periods=n)``;
- ``macd_fast`` = ema_13 - ema_21, ``macd_slow`` = ema_55 - ema_89;
- ``rsi_14`` (Wilder): gains and losses ``max(d, 0)``, ``max(-d, 0)`` of d_i = close_i -
  close_(i-1), each ``ewm(alpha=1/14, adjust=False, min_periods=14)`` over i >= 1;
  100 * G / (G + L), 50 where G + L = 0;
- ``atr_14`` (Wilder): ``ewm(alpha=1/14, adjust=False, min_periods=14)`` of the true range,
  TR_0 = high_0 - low_0, TR_i = max(high_i, close_(i-1)) - min(low_i, close_(i-1));
- ``vegas``: 1 when close > max(ema_144, ema_169), -1 when below their min, 0 between.

Exactness: pandas' ``adjust=False`` recurrence is w = ((1 - a) * w + a * x) / ((1 - a) + a),
skipped when x == w (a constant series stays exact), with a = 1 / (1 + com) from its centre of
mass. The same operations in the same order give the same bits, whichever way the bars are
batched: a series resumed from a :class:`State` equals the series computed whole.

The state of a series is a row of :data:`STATE_WIDTH` floats (bars seen, previous close, the
seven EMAs, Wilder's G and L, the ATR), so many series' states are one 2-D array.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

EMA_SPANS: Final = (8, 13, 21, 55, 89, 144, 169)
WILDER: Final = 14
"""Periods of rsi_14 and atr_14."""
COLUMNS: Final = (
    *(f"ema_{n}" for n in EMA_SPANS),
    "macd_fast", "macd_slow", "rsi_14", "atr_14", "vegas",
)  # fmt: skip
"""Indicator columns in output order (``vegas`` is int8, the others float64; all nullable)."""

# state row layout
COUNT: Final = 0
PREV_CLOSE: Final = 1
EMA0: Final = 2
GAIN: Final = EMA0 + len(EMA_SPANS)
LOSS: Final = GAIN + 1
ATR: Final = LOSS + 1
STATE_WIDTH: Final = ATR + 1
STATE_NAMES: Final = (
    "bars", "prev_close", *(f"ema_{n}" for n in EMA_SPANS), "avg_gain", "avg_loss", "atr",
)  # fmt: skip


def _alpha_of_com(com: float) -> float:
    return 1.0 / (1.0 + com)


def span_alpha(span: int) -> float:
    """Pandas' smoothing factor for ``span``: centre of mass (span - 1) / 2, then 1 / (1 + com)."""
    return _alpha_of_com((float(span) - 1.0) / 2.0)


def given_alpha(alpha: float) -> float:
    """Pandas' smoothing factor for ``alpha``, through its centre of mass (1 - alpha) / alpha."""
    return _alpha_of_com((1.0 - alpha) / alpha)


EMA_ALPHAS: Final = tuple(span_alpha(n) for n in EMA_SPANS)
WILDER_ALPHA: Final = given_alpha(1.0 / WILDER)


def fresh(count: int = 1) -> F64:
    """States of ``count`` series that have seen no bar."""
    out = np.full((count, STATE_WIDTH), np.nan, dtype=np.float64)
    out[:, COUNT] = 0.0
    return out


def _smooth(w: F64, x: F64, alpha: float) -> F64:
    """One pandas ``adjust=False`` step of every series (unchanged where x == w)."""
    keep = 1.0 - alpha
    return np.where(w != x, (keep * w + alpha * x) / (keep + alpha), w)


@dataclass(frozen=True)
class Series:
    """Indicator columns of many series' bars, and their states.

    ``values[name]`` holds NaN where the indicator is null (``vegas`` as float: -1, 0, 1 or
    NaN). ``before_last`` is each series' state before its last bar (where an incremental run
    resumes, since the last bar may still change); ``last`` the state after it.
    """

    values: dict[str, F64]
    before_last: F64
    last: F64


COMPILED_MIN_BARS: Final = 1_000_000
"""Bars from which :func:`compute` runs the compiled loop (numba's start costs about a second)."""
COMPILED_MIN_LENGTH: Final = 4096
"""Longest series from which it does too: numpy's lockstep pays about 0.1 ms per step."""
PYTHON_MAX_BARS: Final = 200_000
"""Bars up to which a few series run in plain Python floats (about 2 us a bar) rather than
loading numba: a split recomputes one symbol's whole history, seven intervals of it."""
PYTHON_BARS_PER_STEP: Final = 20
"""Plain Python while the bars are at most this many times the longest series: numpy's
lockstep costs per step what Python costs for about fifty bars."""

Loop = Literal["numpy", "compiled", "python"]


def choose_loop(total: int, longest: int) -> Loop:
    """The loop :func:`compute` runs by default for ``total`` bars, the longest series given.

    The compiled loop once numba is loaded or for a large input; plain Python for a few long
    series (one symbol's history); numpy's lockstep for many short ones (a daily run).
    """
    if "core.indicator_loops" in sys.modules:
        return "compiled"
    if total <= PYTHON_MAX_BARS and total <= PYTHON_BARS_PER_STEP * longest:
        return "python"
    if total >= COMPILED_MIN_BARS or longest >= COMPILED_MIN_LENGTH:
        return "compiled"
    return "numpy"


def compute(
    high: F64,
    low: F64,
    close: F64,
    offsets: I64,
    states: F64 | None = None,
    *,
    dest: I64 | None = None,
    loop: Loop | None = None,
) -> Series:
    """Indicators of every series: series ``i`` is bars ``offsets[i]:offsets[i + 1]``.

    ``states[i]`` is where series ``i`` starts (:func:`fresh` when None). ``dest``: the values
    of bar ``j`` go to position ``dest[j]`` of the outputs (a permutation), so a caller
    wanting another order (gold's month files) needs no gather afterwards. ``loop``: numba's
    (:mod:`core.indicator_loops`), numpy's lockstep or plain Python, by default
    :func:`choose_loop`'s. All give the same bits.
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    n_series = len(offsets) - 1
    init = fresh(n_series) if states is None else np.array(states, dtype=np.float64, copy=True)
    if init.shape != (n_series, STATE_WIDTH):
        msg = f"states must have shape ({n_series}, {STATE_WIDTH}), not {init.shape}"
        raise ValueError(msg)
    total = int(offsets[-1]) if n_series else 0
    if loop is None:
        loop = choose_loop(total, int(np.diff(offsets).max()) if n_series else 0)
    high, low, close = (np.ascontiguousarray(x, dtype=np.float64) for x in (high, low, close))
    where = np.arange(total, dtype=np.int64) if dest is None else np.asarray(dest, np.int64)
    if loop == "compiled":
        from core import indicator_loops  # numba loads only for large inputs

        out, before, last = indicator_loops.run(high, low, close, offsets, init, where)
        return Series(out, before, last)
    step = _lockstep if loop == "numpy" else _in_python
    out, before, last = step(high, low, close, offsets, init, where)
    if dest is not None:
        placed = np.empty_like(close)
        placed[where] = close
        close = placed
    out["macd_fast"] = out["ema_13"] - out["ema_21"]
    out["macd_slow"] = out["ema_55"] - out["ema_89"]
    e144, e169 = out["ema_144"], out["ema_169"]
    with np.errstate(invalid="ignore"):
        vegas = np.where(
            close > np.maximum(e144, e169), 1.0, np.where(close < np.minimum(e144, e169), -1.0, 0.0)
        )
    out["vegas"] = np.where(np.isnan(e144) | np.isnan(e169), np.nan, vegas)
    return Series(out, before, last)


@dataclass(frozen=True)
class Interleaved(Series):
    """:class:`Series` of bars given in the caller's order, and where each series lies in it.

    ``first_at[i]`` and ``last_at[i]``: the positions of series ``i``'s first and last bars in
    that order, -1 for a series without bars.
    """

    first_at: I64
    last_at: I64


def compute_interleaved(
    high: F64,
    low: F64,
    close: F64,
    series: npt.NDArray[np.integer[Any]],
    states: F64,
    *,
    take: I64 | None = None,
    loop: Loop | None = None,
) -> Interleaved:
    """Indicators of bars in the order the caller files them, many series interleaved.

    Bar ``j`` is the next bar of series ``series[j]`` (each series' bars in time order), its
    prices at position ``take[j]`` of the inputs (``j`` when None); its values go to position
    ``j`` of the outputs. ``states[i]`` is where series ``i`` starts. Gold files every symbol's
    bars of a month together: computed in that order, the outputs are written sequentially,
    where :func:`compute`'s ``dest`` scatters them. Same bits as :func:`compute`.
    """
    init = np.array(states, dtype=np.float64, copy=True)
    if init.ndim != 2 or init.shape[1] != STATE_WIDTH:
        msg = f"states must have shape (series, {STATE_WIDTH}), not {init.shape}"
        raise ValueError(msg)
    n_series = len(init)
    series = np.asarray(series)
    if len(series) and (int(series.min()) < 0 or int(series.max()) >= n_series):
        msg = f"series ids must lie in [0, {n_series})"
        raise ValueError(msg)
    counts = np.bincount(series, minlength=n_series).astype(np.int64)
    if loop is None:
        loop = choose_loop(len(series), int(counts.max()) if n_series else 0)
    high, low, close = (np.ascontiguousarray(x, dtype=np.float64) for x in (high, low, close))
    if loop == "compiled":
        from core import indicator_loops

        out, before, last, first_at, last_at = indicator_loops.run_interleaved(
            high, low, close, np.asarray(series, np.int64), init, take
        )
        return Interleaved(out, before, last, first_at, last_at)
    # numpy or Python: the series one after another (a stable sort keeps each in order)
    order = np.argsort(series, kind="stable").astype(np.int64)
    offsets = np.zeros(n_series + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    where = order if take is None else np.asarray(take, np.int64)[order]
    grouped = compute(high[where], low[where], close[where], offsets, init, dest=order, loop=loop)
    first_at = np.full(n_series, -1, dtype=np.int64)
    last_at = first_at.copy()
    present = counts > 0
    first_at[present] = order[offsets[:-1][present]]
    last_at[present] = order[offsets[1:][present] - 1]
    return Interleaved(grouped.values, grouped.before_last, grouped.last, first_at, last_at)


def _lockstep(
    high: F64, low: F64, close: F64, offsets: I64, init: F64, dest: I64
) -> tuple[dict[str, F64], F64, F64]:
    """The series advanced together, longest first.

    Each step is array operations over the series still running: cheap for many short series,
    as in a daily run.
    """
    n_series = len(offsets) - 1
    total = int(offsets[-1]) if n_series else 0
    lengths = np.diff(offsets)
    order = np.argsort(-lengths, kind="stable")
    by_length = lengths[order]
    starts = offsets[:-1][order]
    # column-major state: a step touches prefixes [:m] of each row, contiguous
    st = np.ascontiguousarray(init[order].T)
    saved = st.copy()
    out = {name: np.full(total, np.nan, dtype=np.float64) for name in COLUMNS}
    longest = int(by_length[0]) if n_series else 0
    running = np.searchsorted(-by_length, -np.arange(1, longest + 1), side="right")
    emas = [out[f"ema_{n}"] for n in EMA_SPANS]
    for step in range(longest):
        m = int(running[step])  # series with more than ``step`` bars
        ending = int(running[step + 1]) if step + 1 < longest else 0
        if ending < m:  # series whose last bar is this one: keep their state before it
            saved[:, ending:m] = st[:, ending:m]
        pos = starts[:m] + step
        c, h, lo = close[pos], high[pos], low[pos]
        at = dest[pos]
        count = st[COUNT, :m]
        started = count > 0
        prev = st[PREV_CLOSE, :m]
        seen = count + 1.0
        for j, alpha in enumerate(EMA_ALPHAS):
            e = np.where(started, _smooth(st[EMA0 + j, :m], c, alpha), c)
            st[EMA0 + j, :m] = e
            emas[j][at] = np.where(seen >= EMA_SPANS[j], e, np.nan)
        d = c - prev
        # where() rather than maximum(): a zero gain is +0.0 whatever the SIMD path does
        gain, loss = np.where(d > 0.0, d, 0.0), np.where(d < 0.0, -d, 0.0)
        first_diff = count == 1.0
        g = np.where(first_diff, gain, _smooth(st[GAIN, :m], gain, WILDER_ALPHA))
        lo_avg = np.where(first_diff, loss, _smooth(st[LOSS, :m], loss, WILDER_ALPHA))
        g = np.where(started, g, np.nan)
        lo_avg = np.where(started, lo_avg, np.nan)
        st[GAIN, :m], st[LOSS, :m] = g, lo_avg
        top, bottom = np.where(h > prev, h, prev), np.where(lo < prev, lo, prev)
        tr = np.where(started, top - bottom, h - lo)
        atr = np.where(started, _smooth(st[ATR, :m], tr, WILDER_ALPHA), tr)
        st[ATR, :m] = atr
        st[PREV_CLOSE, :m] = c
        st[COUNT, :m] = seen
        with np.errstate(invalid="ignore", divide="ignore"):
            both = g + lo_avg
            rsi = np.where(both == 0.0, 50.0, 100.0 * g / both)
        out["rsi_14"][at] = np.where(seen - 1.0 >= WILDER, rsi, np.nan)
        out["atr_14"][at] = np.where(seen >= WILDER, atr, np.nan)
    back = np.empty_like(order)
    back[order] = np.arange(n_series)
    return out, np.ascontiguousarray(saved.T[back]), np.ascontiguousarray(st.T[back])


def _in_python(
    high: F64, low: F64, close: F64, offsets: I64, init: F64, dest: I64
) -> tuple[dict[str, F64], F64, F64]:
    """Each series in its turn, in Python floats: the numpy path's operations, bar by bar."""
    n_series = len(offsets) - 1
    total = int(offsets[-1]) if n_series else 0
    out = {name: np.full(total, np.nan, dtype=np.float64) for name in COLUMNS}
    before = np.array(init, dtype=np.float64, copy=True)
    after = np.array(init, dtype=np.float64, copy=True)
    for s in range(n_series):
        a, b = int(offsets[s]), int(offsets[s + 1])
        if a == b:
            continue
        emas, rsi, atr, before[s], after[s] = _series(
            high[a:b].tolist(), low[a:b].tolist(), close[a:b].tolist(), init[s].tolist()
        )
        at = dest[a:b]
        for j, n in enumerate(EMA_SPANS):
            out[f"ema_{n}"][at] = emas[j]
        out["rsi_14"][at], out["atr_14"][at] = rsi, atr
    return out, before, after


def wilder_step(
    started: bool,
    first: bool,
    c: float,
    prev: float,
    h: float,
    lo: float,
    g: float,
    lavg: float,
    atr: float,
    alpha: float,
    keep: float,
) -> tuple[float, float, float]:
    """One bar of Wilder's average gain, average loss and ATR, in floats.

    The plain-Python loop runs it as is and the compiled loop (:mod:`core.indicator_loops`)
    compiles it: one text for both. ``first``: the bar of the first difference.
    """
    if not started:
        return math.nan, math.nan, h - lo
    d = c - prev
    gain = d if d > 0.0 else 0.0
    loss = -d if d < 0.0 else 0.0
    # the denominator is exactly 1.0 for every period used (x / 1.0 is x): skipped then, as
    # the compiled loop's EMA step skips it
    total = keep + alpha
    one = total == 1.0
    if first:
        g, lavg = gain, loss
    else:
        if g != gain:
            g = keep * g + alpha * gain if one else (keep * g + alpha * gain) / total
        if lavg != loss:
            lavg = keep * lavg + alpha * loss if one else (keep * lavg + alpha * loss) / total
    tr = (h if h > prev else prev) - (lo if lo < prev else prev)
    if atr != tr:
        atr = keep * atr + alpha * tr if one else (keep * atr + alpha * tr) / total
    return g, lavg, atr


def _series(
    high: list[float], low: list[float], close: list[float], init: list[float]
) -> tuple[list[list[float]], list[float], list[float], list[float], list[float]]:
    """One series: (EMA columns, rsi, atr, state before its last bar, state after)."""
    nan = math.nan
    steps = [(a, 1.0 - a) for a in EMA_ALPHAS]
    spans = [float(n) for n in EMA_SPANS]
    wa, wk, wilder = WILDER_ALPHA, 1.0 - WILDER_ALPHA, float(WILDER)
    count, prev = init[COUNT], init[PREV_CLOSE]
    ema = init[EMA0:GAIN]
    g, lavg, atr = init[GAIN], init[LOSS], init[ATR]
    n = len(close)
    emas = [[nan] * n for _ in ema]
    rsi_out, atr_out = [nan] * n, [nan] * n
    before = init
    for i, (h, lo, c) in enumerate(zip(high, low, close, strict=True)):
        if i == n - 1:
            before = [count, prev, *ema, g, lavg, atr]
        started = count > 0
        seen = count + 1.0
        for j, (a, k) in enumerate(steps):
            w = ema[j]
            e = ((k * w + a * c) / (k + a) if w != c else w) if started else c
            ema[j] = e
            if seen >= spans[j]:
                emas[j][i] = e
        g, lavg, atr = wilder_step(started, count == 1.0, c, prev, h, lo, g, lavg, atr, wa, wk)
        prev, count = c, seen
        if seen - 1.0 >= wilder:
            both = g + lavg
            rsi_out[i] = 50.0 if both == 0.0 else 100.0 * g / both
        if seen >= wilder:
            atr_out[i] = atr
    return emas, rsi_out, atr_out, before, [count, prev, *ema, g, lavg, atr]


@dataclass(frozen=True)
class State:
    """One series' state, for a live flow seeded from history.

    ``advance`` returns the indicators of one more bar and the state after it, leaving this one
    unchanged: a forming bar is evaluated from the last closed bar's state again and again,
    and only a closed bar's state is kept.
    """

    row: tuple[float, ...]

    @classmethod
    def empty(cls) -> State:
        """A series that has seen no bar."""
        return cls(tuple(float(x) for x in fresh(1)[0]))

    @classmethod
    def of_history(cls, high: F64, low: F64, close: F64) -> State:
        """The state after a whole history of bars (oldest first)."""
        n = len(close)
        series = compute(high, low, close, np.array([0, n], dtype=np.int64))
        return cls(tuple(float(x) for x in series.last[0]))

    @property
    def bars(self) -> int:
        """Bars seen."""
        return int(self.row[COUNT])

    def advance(
        self, high: float, low: float, close: float
    ) -> tuple[dict[str, float | None], State]:
        """(indicators of the bar, state after it).

        The plain-Python loop of :func:`compute` (the same bits as its other loops) on one bar,
        without numpy: a live minute close advances a thousand series at once, and building
        arrays for one bar each cost about 100 us a series.
        """
        emas, rsi, atr, _, after = _series([high], [low], [close], list(self.row))
        raw = {f"ema_{n}": emas[j][0] for j, n in enumerate(EMA_SPANS)}
        e144, e169 = raw["ema_144"], raw["ema_169"]
        raw["macd_fast"] = raw["ema_13"] - raw["ema_21"]
        raw["macd_slow"] = raw["ema_55"] - raw["ema_89"]
        raw["rsi_14"], raw["atr_14"] = rsi[0], atr[0]
        raw["vegas"] = (
            math.nan if math.isnan(e144) or math.isnan(e169)
            else 1.0 if close > max(e144, e169) else -1.0 if close < min(e144, e169) else 0.0
        )  # fmt: skip
        values: dict[str, float | None] = {
            name: None if math.isnan(v := raw[name]) else v for name in COLUMNS
        }
        return values, State(tuple(after))
