"""core.indicators against the pandas definitions, resumed == whole, compiled == numpy."""

from __future__ import annotations

import sys

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import indicators as ind

pytestmark = pytest.mark.unit
F64 = npt.NDArray[np.float64]


def pandas_reference(high: F64, low: F64, close: F64) -> dict[str, F64]:
    """The contract's definitions written with pandas, as a user would."""
    c, h, lo = pd.Series(close), pd.Series(high), pd.Series(low)
    out = {f"ema_{n}": c.ewm(span=n, adjust=False, min_periods=n).mean() for n in ind.EMA_SPANS}
    out["macd_fast"] = out["ema_13"] - out["ema_21"]
    out["macd_slow"] = out["ema_55"] - out["ema_89"]
    d = c.diff()
    gain = d.clip(lower=0).ewm(alpha=1 / 14, adjust=False, min_periods=14).mean()
    loss = (-d).clip(lower=0).ewm(alpha=1 / 14, adjust=False, min_periods=14).mean()
    rsi = 100 * gain / (gain + loss)
    rsi[(gain + loss) == 0] = 50.0
    out["rsi_14"] = rsi
    prev = c.shift(1)
    tr = pd.concat([h, prev], axis=1).max(axis=1) - pd.concat([lo, prev], axis=1).min(axis=1)
    tr.iloc[0] = high[0] - low[0] if len(high) else np.nan
    out["atr_14"] = tr.ewm(alpha=1 / 14, adjust=False, min_periods=14).mean()
    top = pd.concat([out["ema_144"], out["ema_169"]], axis=1)
    vegas = pd.Series(0.0, index=c.index)
    vegas[c > top.max(axis=1)] = 1.0
    vegas[c < top.min(axis=1)] = -1.0
    vegas[top.isna().any(axis=1)] = np.nan
    out["vegas"] = vegas
    return {k: v.to_numpy(dtype=np.float64) for k, v in out.items()}


def assert_close(got: F64, want: F64, what: str) -> None:
    """Equal nulls, values within 1e-9 relative (the contract's tolerance)."""
    assert np.array_equal(np.isnan(got), np.isnan(want)), f"{what}: nulls differ"
    both = ~np.isnan(want)
    np.testing.assert_allclose(got[both], want[both], rtol=1e-9, atol=0, err_msg=what)


@st.composite
def histories(draw: st.DrawFn) -> list[tuple[F64, F64, F64]]:
    """Series of any length (0, 1, around the warm-ups, long), random walks, constant runs."""
    out = []
    for _ in range(draw(st.integers(1, 6))):
        n = draw(st.sampled_from([0, 1, 2, 13, 14, 15, 168, 169, 170]) | st.integers(0, 400))
        seed = draw(st.integers(0, 2**32 - 1))
        rng = np.random.default_rng(seed)
        kind = draw(st.sampled_from(["walk", "constant", "steps"]))
        if kind == "constant":
            close = np.full(n, draw(st.sampled_from([1.0, 12.5, 0.0123, 4321.75])))
        elif kind == "steps":  # long flat runs broken by jumps
            close = np.repeat(rng.choice([5.0, 5.5, 7.25], size=n // 20 + 1), 20)[:n]
        else:
            close = 50.0 * np.exp(np.cumsum(rng.normal(0.0, 0.03, n)))
        spread = np.abs(rng.normal(0.0, 0.02, n)) * close
        out.append((close + spread, close - spread * rng.random(n), close))
    return out


def _flat(series: list[tuple[F64, F64, F64]]) -> tuple[F64, F64, F64, npt.NDArray[np.int64]]:
    lengths = [len(c) for _, _, c in series]
    offsets = np.zeros(len(series) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return (
        np.concatenate([h for h, _, _ in series]),
        np.concatenate([lo for _, lo, _ in series]),
        np.concatenate([c for _, _, c in series]),
        offsets,
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories())
def test_every_column_equals_the_pandas_definitions(series: list[tuple[F64, F64, F64]]) -> None:
    high, low, close, offsets = _flat(series)
    got = ind.compute(high, low, close, offsets)
    for i, (h, lo, c) in enumerate(series):
        if not len(c):
            continue
        want = pandas_reference(h, lo, c)
        for name in ind.COLUMNS:
            assert_close(got.values[name][offsets[i] : offsets[i + 1]], want[name], name)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories(), st.data())
def test_resuming_from_a_state_gives_the_same_bits(
    series: list[tuple[F64, F64, F64]], data: st.DataObject
) -> None:
    high, low, close, offsets = _flat(series)
    whole = ind.compute(high, low, close, offsets)
    # first part of every series, then the rest from its state
    cuts = [data.draw(st.integers(0, len(c))) for _, _, c in series]
    head = _flat([(h[:k], lo[:k], c[:k]) for (h, lo, c), k in zip(series, cuts, strict=True)])
    tail = _flat([(h[k:], lo[k:], c[k:]) for (h, lo, c), k in zip(series, cuts, strict=True)])
    first = ind.compute(*head)
    rest = ind.compute(*tail, states=first.last)
    for i, k in enumerate(cuts):
        lo_, hi_ = int(offsets[i]), int(offsets[i + 1])
        for name in ind.COLUMNS:
            joined = np.concatenate(
                [
                    first.values[name][head[3][i] : head[3][i + 1]],
                    rest.values[name][tail[3][i] : tail[3][i + 1]],
                ]
            )
            assert joined.tobytes() == whole.values[name][lo_:hi_].tobytes(), (name, k)
    assert np.array_equal(rest.last, whole.last, equal_nan=True)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories())
def test_the_compiled_and_python_loops_give_the_numpy_bits(
    series: list[tuple[F64, F64, F64]],
) -> None:
    high, low, close, offsets = _flat(series)
    a = ind.compute(high, low, close, offsets, loop="numpy")
    # resumed mid-way too, and written through a permutation, as gold computes them
    head = ind.compute(high, low, close, offsets, loop="numpy").before_last
    dest = np.random.default_rng(len(close)).permutation(len(close))
    for loop in ("compiled", "python"):
        b = ind.compute(high, low, close, offsets, loop=loop)
        for name in ind.COLUMNS:
            assert a.values[name].tobytes() == b.values[name].tobytes(), (loop, name)
        assert a.before_last.tobytes() == b.before_last.tobytes(), loop
        assert a.last.tobytes() == b.last.tobytes(), loop
        want = ind.compute(high, low, close, offsets, head, dest=dest, loop="numpy")
        got = ind.compute(high, low, close, offsets, head, dest=dest, loop=loop)
        for name in ind.COLUMNS:
            assert want.values[name].tobytes() == got.values[name].tobytes(), (loop, name)
        assert want.last.tobytes() == got.last.tobytes(), loop


def test_one_long_history_runs_in_python_and_a_daily_run_in_numpy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(sys.modules, "core.indicator_loops", raising=False)
    assert ind.choose_loop(16_000 * 2, 16_000) == "python"  # a split: one symbol's history
    assert ind.choose_loop(5_350 * 2, 2) == "numpy"  # a daily run: two bars a symbol
    assert ind.choose_loop(22_000_000, 16_000) == "compiled"  # a full rebuild
    monkeypatch.setitem(sys.modules, "core.indicator_loops", sys)
    assert ind.choose_loop(16_000, 16_000) == "compiled"  # loaded already: no reason not to


def test_state_before_the_last_bar_resumes_a_revised_last_bar() -> None:
    rng = np.random.default_rng(4)
    close = 20.0 + np.cumsum(rng.normal(0, 0.5, 300))
    high, low = close + 0.5, close - 0.5
    first = ind.compute(high, low, close, np.array([0, 300]))
    revised = close.copy()
    revised[-1] += 1.0
    again = ind.compute(high[-1:], low[-1:], revised[-1:], np.array([0, 1]), first.before_last)
    whole = ind.compute(high, low, revised, np.array([0, 300]))
    for name in ind.COLUMNS:
        assert again.values[name][0] == whole.values[name][-1] or (
            np.isnan(again.values[name][0]) and np.isnan(whole.values[name][-1])
        )


def test_a_live_state_seeded_from_history_continues_it() -> None:
    rng = np.random.default_rng(9)
    close = 100.0 + np.cumsum(rng.normal(0, 1, 400))
    high, low = close + 1.0, close - 1.0
    whole = ind.compute(high, low, close, np.array([0, 400]))
    state = ind.State.of_history(high[:399], low[:399], close[:399])
    assert state.bars == 399
    forming, after = state.advance(float(high[-1]) - 0.5, float(low[-1]), float(close[-1]) - 0.3)
    values, after = state.advance(float(high[-1]), float(low[-1]), float(close[-1]))
    assert forming != values  # the forming bar was evaluated, not kept
    for name in ind.COLUMNS:
        assert values[name] == whole.values[name][-1]
    assert after.bars == 400
    empty, _ = ind.State.empty().advance(2.0, 1.0, 1.5)
    assert empty["ema_8"] is None and empty["atr_14"] is None and empty["vegas"] is None


@pytest.mark.parametrize("flat", [False, True])
def test_a_live_state_advanced_bar_by_bar_has_the_bits_of_compute(flat: bool) -> None:
    rng = np.random.default_rng(11)
    steps = rng.normal(0, 1, 300)
    if flat:
        steps[:40] = 0.0  # no gain and no loss: rsi 50
    close = 100.0 + np.cumsum(steps)
    high, low = close + rng.uniform(0, 2, 300), close - rng.uniform(0, 2, 300)
    whole = ind.compute(high, low, close, np.array([0, 300]), loop="numpy")
    state = ind.State.empty()
    for i in range(300):
        values, state = state.advance(float(high[i]), float(low[i]), float(close[i]))
        for name in ind.COLUMNS:
            want = float(whole.values[name][i])
            assert values[name] == (None if np.isnan(want) else want), (i, name)
    assert state.row == tuple(float(x) for x in whole.last[0])


def test_smoothing_factors_are_pandas_own() -> None:
    assert ind.span_alpha(8) == 1.0 / (1.0 + 3.5)
    assert ind.WILDER_ALPHA == 1.0 / (1.0 + (1.0 - 1.0 / 14) / (1.0 / 14))
    with pytest.raises(ValueError, match="shape"):
        ind.compute(np.ones(2), np.ones(2), np.ones(2), np.array([0, 2]), ind.fresh(2))


@given(histories(), st.integers(0, 2**32 - 1))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_interleaved_bars_give_the_bits_of_each_series_alone(
    series: list[tuple[F64, F64, F64]], seed: int
) -> None:
    """Bars shuffled across series (each one's in time order), as gold files a month's bars.

    Empty, one-bar and shorter-than-a-period series, constant prices and halts (flat runs)
    included; both the compiled and the numpy path, prices gathered or given in bar order;
    values equal pandas, states and first/last positions equal the series-by-series run.
    """
    high, low, close, offsets = _flat(series)
    n_series = len(series)
    ids = np.repeat(np.arange(n_series, dtype=np.int64), np.diff(offsets))
    rng = np.random.default_rng(seed)
    # a random interleaving that keeps each series' bars in order
    order = np.argsort(rng.random(len(ids)), kind="stable")
    slots = np.sort(order)
    perm = np.empty_like(order)
    for s in range(n_series):
        mine = np.flatnonzero(ids[order] == s)
        perm[slots[mine]] = np.arange(offsets[s], offsets[s + 1])
    whole = ind.compute(high, low, close, offsets, loop="numpy")
    loops: tuple[ind.Loop, ...] = ("numpy", "python", "compiled")
    for loop in loops:
        got = ind.compute_interleaved(
            high, low, close, ids[perm], ind.fresh(n_series), take=perm, loop=loop
        )
        given_order = ind.compute_interleaved(
            high[perm], low[perm], close[perm], ids[perm], ind.fresh(n_series), loop=loop
        )
        back = np.empty_like(perm)
        back[perm] = np.arange(len(perm))
        for s, (h, lo, c) in enumerate(series):
            rows = back[offsets[s] : offsets[s + 1]]
            assert got.first_at[s] == (rows[0] if len(rows) else -1)
            assert got.last_at[s] == (rows[-1] if len(rows) else -1)
            if not len(rows):
                continue
            want = pandas_reference(h, lo, c)
            for name in ind.COLUMNS:
                assert_close(got.values[name][rows], want[name], f"{name} of series {s}")
                assert np.array_equal(got.values[name], given_order.values[name], equal_nan=True), (
                    name
                )
            assert got.first_at[s] == (rows[0] if len(rows) else -1)
            assert got.last_at[s] == (rows[-1] if len(rows) else -1)
        assert np.array_equal(got.before_last, whole.before_last, equal_nan=True)
        assert np.array_equal(got.last, whole.last, equal_nan=True)
