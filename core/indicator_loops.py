"""The compiled loops (numba) of :mod:`core.indicators`, for whole-market rebuilds.

One pass over the bars, each series' state in a row of a small array, instead of numpy's
lockstep over all series, which costs a dozen full-size temporaries per step. Every operation
mirrors the numpy path in the same order (no fast-math, so no fused multiply-add), so the two
give the same bits.

Two orders: series after series (:func:`run`, outputs scattered to ``dest``), or bars in the
order the caller files them, the series interleaved (:func:`run_interleaved`): gold's month
files hold every symbol's bars of a month together, and writing outputs in that order is
sequential where a scatter misses the cache on every column of every bar.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from core import indicators as ind
from core.jit import jit

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Consts = tuple[F64, F64, float, float]
"""EMA alphas and spans, Wilder's alpha and period."""
Outputs = tuple[F64, F64, F64, F64, F64]
"""EMAs (2-D), RSI, ATR, the two MACDs (2-D), Vegas."""


def _smooth(w: float, x: float, alpha: float, keep: float) -> float:
    if w != x:
        return (keep * w + alpha * x) / (keep + alpha)
    return w


def _bar(st: F64, h: float, lo: float, c: float, at: int, consts: Consts, outs: Outputs) -> None:
    """Advance one series' state ``st`` by one bar and write its indicators at ``at``."""
    alphas, spans, wilder_alpha, wilder = consts
    emas, rsi_out, atr_out, macd, vegas = outs
    n_ema = len(alphas)
    g_at, l_at, atr_at = 2 + n_ema, 3 + n_ema, 4 + n_ema
    wilder_keep = 1.0 - wilder_alpha
    count = st[0]
    started = count > 0
    prev = st[1]
    seen = count + 1.0
    for j in range(n_ema):
        e = _smooth_jit(st[2 + j], c, alphas[j], 1.0 - alphas[j]) if started else c
        st[2 + j] = e
        emas[j, at] = e if seen >= spans[j] else np.nan
    g = np.nan
    lavg = np.nan
    if started:
        d = c - prev
        gain = d if d > 0.0 else 0.0
        loss = -d if d < 0.0 else 0.0
        if count == 1.0:
            g, lavg = gain, loss
        else:
            g = _smooth_jit(st[g_at], gain, wilder_alpha, wilder_keep)
            lavg = _smooth_jit(st[l_at], loss, wilder_alpha, wilder_keep)
        top = h if h > prev else prev
        bottom = lo if lo < prev else prev
        atr = _smooth_jit(st[atr_at], top - bottom, wilder_alpha, wilder_keep)
    else:
        atr = h - lo
    st[g_at], st[l_at], st[atr_at] = g, lavg, atr
    st[1] = c
    st[0] = seen
    if seen - 1.0 >= wilder:
        both = g + lavg
        rsi_out[at] = 50.0 if both == 0.0 else 100.0 * g / both
    else:
        rsi_out[at] = np.nan
    atr_out[at] = atr if seen >= wilder else np.nan
    # derived columns as core.indicators computes them from the outputs
    macd[0, at] = emas[1, at] - emas[2, at]
    macd[1, at] = emas[3, at] - emas[4, at]
    slow, slower = emas[5, at], emas[6, at]
    if slow != slow or slower != slower:
        vegas[at] = np.nan
    elif c > max(slow, slower):
        vegas[at] = 1.0
    elif c < min(slow, slower):
        vegas[at] = -1.0
    else:
        vegas[at] = 0.0


def _loop(
    high: F64,
    low: F64,
    close: F64,
    offsets: I64,
    state: F64,
    saved: F64,
    consts: Consts,
    outs: Outputs,
    dest: I64,
) -> None:
    for s in range(len(offsets) - 1):
        a, b = offsets[s], offsets[s + 1]
        st = state[s]
        for i in range(a, b):
            if i == b - 1:
                saved[s, :] = st
            _bar_jit(st, high[i], low[i], close[i], dest[i], consts, outs)


def _interleaved(
    high: F64,
    low: F64,
    close: F64,
    take: I64,
    series: I64,
    state: F64,
    saved: F64,
    first_at: I64,
    last_at: I64,
    consts: Consts,
    outs: Outputs,
) -> None:
    n = len(series)
    gather = len(take) > 0
    for i in range(n):  # where each series' bars begin and end
        s = series[i]
        if first_at[s] < 0:
            first_at[s] = i
        last_at[s] = i
    for i in range(n):
        s = series[i]
        st = state[s]
        if i == last_at[s]:
            saved[s, :] = st
        r = take[i] if gather else i
        _bar_jit(st, high[r], low[r], close[r], i, consts, outs)


_smooth_jit: Any = jit(_smooth, inline="always")
_bar_jit: Any = jit(_bar, inline="always")
_loop_jit: Any = jit(_loop)
_interleaved_jit: Any = jit(_interleaved)


def _outputs(total: int) -> Outputs:
    return (
        np.empty((len(ind.EMA_SPANS), total), dtype=np.float64),
        np.empty(total, dtype=np.float64),
        np.empty(total, dtype=np.float64),
        np.empty((2, total), dtype=np.float64),
        np.empty(total, dtype=np.float64),
    )


def _columns(emas: F64, rsi: F64, atr: F64, macd: F64, vegas: F64) -> dict[str, F64]:
    out = {f"ema_{n}": emas[j] for j, n in enumerate(ind.EMA_SPANS)}
    out["rsi_14"], out["atr_14"] = rsi, atr
    out["macd_fast"], out["macd_slow"], out["vegas"] = macd[0], macd[1], vegas
    return out


def _constants() -> Consts:
    return (
        np.array(ind.EMA_ALPHAS, dtype=np.float64),
        np.array(ind.EMA_SPANS, dtype=np.float64),
        float(ind.WILDER_ALPHA),
        float(ind.WILDER),
    )


def run(
    high: F64, low: F64, close: F64, offsets: I64, init: F64, dest: I64
) -> tuple[dict[str, F64], F64, F64]:
    """(indicator columns, states before each last bar, states after)."""
    total = int(offsets[-1]) if len(offsets) > 1 else 0
    state = np.ascontiguousarray(init, dtype=np.float64).copy()
    saved = state.copy()
    outs = _outputs(total)
    _loop_jit(
        high, low, close, np.ascontiguousarray(offsets, dtype=np.int64), state, saved,
        _constants(), outs, np.ascontiguousarray(dest, np.int64),
    )  # fmt: skip
    return _columns(*outs), saved, state


def run_interleaved(
    high: F64, low: F64, close: F64, series: I64, init: F64, take: I64 | None
) -> tuple[dict[str, F64], F64, F64, I64, I64]:
    """Columns in bar order, states before each last bar and after, series' first and last bar.

    A series without bars has -1 for both.
    """
    total = len(series)
    state = np.ascontiguousarray(init, dtype=np.float64).copy()
    saved = state.copy()
    first_at = np.full(len(state), -1, dtype=np.int64)
    last_at = first_at.copy()
    outs = _outputs(total)
    gather = np.zeros(0, np.int64) if take is None else np.ascontiguousarray(take, np.int64)
    _interleaved_jit(
        high, low, close, gather, np.ascontiguousarray(series, np.int64), state, saved,
        first_at, last_at, _constants(), outs,
    )  # fmt: skip
    return _columns(*outs), saved, state, first_at, last_at


def warm() -> None:
    """Compile (or load from the cache) the loops now, e.g. while rows are read."""
    one = np.ones(1, dtype=np.float64)
    zero = np.zeros(1, np.int64)
    run(one, one, one, np.array([0, 1], dtype=np.int64), ind.fresh(1), zero)
    run_interleaved(one, one, one, zero, ind.fresh(1), None)
