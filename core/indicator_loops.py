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

from typing import Any, Final

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
        mixed = keep * w + alpha * x
        total = keep + alpha
        # the denominator is exactly 1.0 for every period used: x / 1.0 is x, bit for bit,
        # and skipping the division (tens of cycles, on the critical path) halves the loop
        return mixed if total == 1.0 else mixed / total
    return w


def _kernel(
    high: F64,
    low: F64,
    close: F64,
    take: I64,
    put: I64,
    series: I64,
    state: F64,
    saved: F64,
    first_at: I64,
    last_at: I64,
    consts: Consts,
    outs: Outputs,
) -> None:
    """Bar ``i`` is the next bar of ``series[i]``: prices at ``take[i]``, values to ``put[i]``.

    Empty ``take`` or ``put`` mean ``i``. One flat loop body: split into an inlined per-bar
    function, numba compiled it several times slower.
    """
    alphas, spans, wilder_alpha, wilder = consts
    emas, rsi_out, atr_out, macd, vegas = outs
    n_ema = len(alphas)
    g_at, l_at, atr_at = 2 + n_ema, 3 + n_ema, 4 + n_ema
    wilder_keep = 1.0 - wilder_alpha
    gather, scatter = len(take) > 0, len(put) > 0
    n = len(series)
    for i in range(n):  # where each series' bars begin and end
        s = series[i]
        if first_at[s] < 0:
            first_at[s] = i
        last_at[s] = i
    for i in range(n):
        s = series[i]
        if i == last_at[s]:
            saved[s, :] = state[s, :]
        r = take[i] if gather else i
        at = put[i] if scatter else i
        c, h, lo = close[r], high[r], low[r]
        count = state[s, 0]
        started = count > 0
        prev = state[s, 1]
        seen = count + 1.0
        for j in range(n_ema):
            e = _smooth_jit(state[s, 2 + j], c, alphas[j], 1.0 - alphas[j]) if started else c
            state[s, 2 + j] = e
            emas[j, at] = e if seen >= spans[j] else np.nan
        g, lavg, atr = _wilder_jit(
            started, count == 1.0, c, prev, h, lo, state[s, g_at], state[s, l_at],
            state[s, atr_at], wilder_alpha, wilder_keep,
        )  # fmt: skip
        state[s, g_at] = g
        state[s, l_at] = lavg
        state[s, atr_at] = atr
        state[s, 1] = c
        state[s, 0] = seen
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


_smooth_jit: Any = jit(_smooth, inline="always")
_wilder_jit: Any = jit(ind.wilder_step, inline="always")
_kernel_jit: Any = jit(_kernel)
_NONE: Final = np.zeros(0, dtype=np.int64)


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
    """(indicator columns, states before each last bar, states after), series after series."""
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    series = np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))
    out, saved, state, _, _ = _run(high, low, close, series, init, None, dest)
    return out, saved, state


def run_interleaved(
    high: F64, low: F64, close: F64, series: I64, init: F64, take: I64 | None
) -> tuple[dict[str, F64], F64, F64, I64, I64]:
    """Columns in bar order, states before each last bar and after, series' first and last bar.

    A series without bars has -1 for both.
    """
    return _run(high, low, close, series, init, take, None)


def _run(
    high: F64, low: F64, close: F64, series: I64, init: F64, take: I64 | None, put: I64 | None
) -> tuple[dict[str, F64], F64, F64, I64, I64]:
    state = np.ascontiguousarray(init, dtype=np.float64).copy()
    saved = state.copy()
    first_at = np.full(len(state), -1, dtype=np.int64)
    last_at = first_at.copy()
    outs = _outputs(len(series))

    def index(x: I64 | None) -> I64:
        return _NONE if x is None else np.ascontiguousarray(x, np.int64)

    _kernel_jit(
        high, low, close, index(take), index(put), np.ascontiguousarray(series, np.int64),
        state, saved, first_at, last_at, _constants(), outs,
    )  # fmt: skip
    return _columns(*outs), saved, state, first_at, last_at


def warm() -> None:
    """Compile (or load from the cache) the loops now, e.g. while rows are read."""
    one = np.ones(1, dtype=np.float64)
    zero = np.zeros(1, np.int64)
    run(one, one, one, np.array([0, 1], dtype=np.int64), ind.fresh(1), zero)
    run_interleaved(one, one, one, zero, ind.fresh(1), None)
