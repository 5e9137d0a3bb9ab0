"""The compiled loop (numba) of :mod:`core.indicators`, for whole-market rebuilds.

One pass per series, its state in registers, instead of numpy's lockstep over all series,
which costs a dozen full-size temporaries per step. Every operation mirrors the numpy path in
the same order (no fast-math, so no fused multiply-add), so the two give the same bits.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from core import indicators as ind
from core.jit import jit

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


def _smooth(w: float, x: float, alpha: float, keep: float) -> float:
    if w != x:
        return (keep * w + alpha * x) / (keep + alpha)
    return w


def _loop(
    high: F64,
    low: F64,
    close: F64,
    offsets: I64,
    state: F64,
    saved: F64,
    alphas: F64,
    spans: F64,
    wilder_alpha: float,
    wilder: float,
    emas: F64,
    rsi_out: F64,
    atr_out: F64,
    macd: F64,
    vegas: F64,
    dest: I64,
) -> None:
    n_ema = len(alphas)
    g_at, l_at, atr_at = 2 + n_ema, 3 + n_ema, 4 + n_ema
    wilder_keep = 1.0 - wilder_alpha
    for s in range(len(offsets) - 1):
        a, b = offsets[s], offsets[s + 1]
        st = state[s]
        for i in range(a, b):
            if i == b - 1:
                saved[s, :] = st
            c, h, lo = close[i], high[i], low[i]
            at = dest[i]
            count = st[0]
            started = count > 0
            prev = st[1]
            seen = count + 1.0
            for j in range(n_ema):
                e = _smooth_jit(st[2 + j], c, alphas[j], 1.0 - alphas[j]) if started else c
                st[2 + j] = e
                emas[j, at] = e if seen >= spans[j] else np.nan
            g, lavg, atr = _wilder_jit(
                started, count == 1.0, c, prev, h, lo, st[g_at], st[l_at], st[atr_at],
                wilder_alpha, wilder_keep,
            )  # fmt: skip
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


_smooth_jit: Any = jit(_smooth, inline="always")
_wilder_jit: Any = jit(ind.wilder_step, inline="always")
_loop_jit: Any = jit(_loop)


def run(
    high: F64, low: F64, close: F64, offsets: I64, init: F64, dest: I64
) -> tuple[dict[str, F64], F64, F64]:
    """(indicator columns, states before each last bar, states after)."""
    total = int(offsets[-1]) if len(offsets) > 1 else 0
    state = np.ascontiguousarray(init, dtype=np.float64).copy()
    saved = state.copy()
    emas = np.empty((len(ind.EMA_SPANS), total), dtype=np.float64)
    rsi = np.empty(total, dtype=np.float64)
    atr = np.empty(total, dtype=np.float64)
    macd = np.empty((2, total), dtype=np.float64)
    vegas = np.empty(total, dtype=np.float64)
    _loop_jit(
        high, low, close, np.ascontiguousarray(offsets, dtype=np.int64), state, saved,
        np.array(ind.EMA_ALPHAS, dtype=np.float64),
        np.array(ind.EMA_SPANS, dtype=np.float64),
        float(ind.WILDER_ALPHA), float(ind.WILDER), emas, rsi, atr, macd, vegas,
        np.ascontiguousarray(dest, np.int64),
    )  # fmt: skip
    out = {f"ema_{n}": emas[j] for j, n in enumerate(ind.EMA_SPANS)}
    out["rsi_14"], out["atr_14"] = rsi, atr
    out["macd_fast"], out["macd_slow"], out["vegas"] = macd[0], macd[1], vegas
    return out, saved, state


def warm() -> None:
    """Compile (or load from the cache) the loop now, e.g. while rows are read."""
    one = np.ones(1, dtype=np.float64)
    run(one, one, one, np.array([0, 1], dtype=np.int64), ind.fresh(1), np.zeros(1, np.int64))
