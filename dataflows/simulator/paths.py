"""Log-price random walks and the splits they trigger, generated in blocks of sessions.

Daily log returns are hashed from (seed, symbol, global session index) and summed. One pass at
start-up walks every block once to record a checkpoint (the log close before each block) and
the splits; afterwards any cell is ``checkpoint + cumsum(returns inside its block)``, so a
grouped-daily query touches at most one block of all symbols and a per-symbol range query one
column, and both give bit-identical numbers. Splits are decided by the unadjusted price: a
forward split when it runs above a per-symbol ceiling, a reverse split below $1, plus rare
random ones, so prices stay plausible over decades.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from dataflows.simulator import noise
from dataflows.simulator.lru import Lru
from dataflows.simulator.universe import Params

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

BLOCK: Final = 64
"""Sessions per block: a cold grouped-daily query hashes at most BLOCK x n_symbols cells."""
CACHE_CELLS: Final = 4_000_000
"""Block cache budget in cells (8 bytes each)."""
MARKET_SIGMA: Final = 0.009
LOG_FLOOR: Final = 0.0
"""Unadjusted log price below which a reverse split is triggered (below $1)."""
RANDOM_SPLIT_P: Final = 1.0 / 5000.0
COOLDOWN: Final = 20
MIN_AGE: Final = 20

# noise streams
RET: Final = 1
MKT: Final = 2
SPLIT: Final = 3

STOCK_DIVIDEND: Final = (20, 21)
"""A 5% stock dividend: 21 shares for every 20 (it adjusts prices like a split)."""
_FORWARD_RATIOS: Final = (2, 3, 4, 5, 10, 20)
_REVERSE_RATIOS: Final = (5, 10, 20, 25, 50)
_RANDOM_FORWARD: Final = ((1, 2), (1, 3), (2, 3), (1, 4))
_RANDOM_REVERSE: Final = ((10, 1), (5, 1), (8, 1))


@dataclass(frozen=True, slots=True)
class SplitEvents:
    """Splits as parallel arrays, sorted by (session, symbol)."""

    sym: I64
    session: I64
    """Local session index of the execution date (the first session at the new share count)."""
    split_from: I64
    split_to: I64

    @property
    def log_ratio(self) -> F64:
        """log(split_to / split_from): positive for forward splits."""
        return np.log(self.split_to / self.split_from)


class PricePaths:
    """Raw log closes (in listing-day share units) for every (session, symbol)."""

    def __init__(
        self,
        seed: int,
        global_first: int,
        n_sessions: int,
        p: Params,
        list_i: I64,
        delist_i: I64,
        forced: list[tuple[int, int, str]],
    ) -> None:
        self.n = len(p.sigma)
        self.n_sessions = n_sessions
        self.p = p
        self.list_i = list_i
        self.delist_i = delist_i
        self.sym_key = noise.keys(noise.scalar_key(seed, 0x5E), np.arange(self.n))
        self.sess_key = noise.keys(
            noise.scalar_key(seed, 0xDA7), global_first + np.arange(n_sessions)
        )
        mkt_u = noise.unit(noise.combine(self.sess_key, np.zeros(1, dtype=np.uint64), MKT))
        self.market = MARKET_SIGMA * noise.logistic(mkt_u)
        self.n_blocks = max(1, math.ceil(n_sessions / BLOCK))
        self.checkpoints = np.empty((self.n_blocks + 1, self.n), dtype=np.float64)
        self._cache_blocks = max(2, CACHE_CELLS // (BLOCK * self.n))
        self._cache: Lru[int, F64] = Lru(self._cache_blocks)
        self.splits = self._walk(forced)

    # -- returns and blocks ---------------------------------------------------------------
    def returns(self, lo: int, hi: int, sym: I64) -> F64:
        """Log returns of sessions [lo, hi) for symbols ``sym``; zero before listing."""
        rows = np.arange(lo, hi)
        eps = noise.logistic(
            noise.unit(noise.combine(self.sym_key[sym][None, :], self.sess_key[lo:hi, None], RET))
        )
        p = self.p
        r = p.mu[sym] + p.beta[sym] * self.market[lo:hi, None] + p.sigma[sym] * eps
        np.clip(r, -0.35, 0.35, out=r)
        r[rows[:, None] < self.list_i[sym][None, :]] = 0.0
        return r

    def _block_rows(self, b: int) -> tuple[int, int]:
        return b * BLOCK, min((b + 1) * BLOCK, self.n_sessions)

    def block(self, b: int) -> F64:
        """Log closes of every symbol over block ``b`` (rows: sessions, columns: symbols)."""
        hit = self._cache.get(b)
        if hit is not None:
            return hit
        lo, hi = self._block_rows(b)
        out = np.cumsum(self.returns(lo, hi, np.arange(self.n)), axis=0)
        out += self.checkpoints[b][None, :]
        self._remember(b, out)
        return out

    def _remember(self, b: int, arr: F64) -> None:
        arr.setflags(write=False)
        self._cache.put(b, arr)

    def column(self, s: int, lo: int, hi: int) -> F64:
        """Log closes of symbol ``s`` over sessions [lo, hi)."""
        parts = []
        for b in range(lo // BLOCK, (hi - 1) // BLOCK + 1):
            b_lo, b_hi = self._block_rows(b)
            cached = self._cache.get(b)
            if cached is not None:
                col = cached[:, s]
            else:
                col = (
                    np.cumsum(self.returns(b_lo, b_hi, np.array([s]))[:, 0])
                    + self.checkpoints[b, s]
                )
            parts.append(col[max(lo, b_lo) - b_lo : min(hi, b_hi) - b_lo])
        return np.concatenate(parts) if parts else np.empty(0)

    def row(self, i: int) -> tuple[F64, F64]:
        """(previous log close, log close) of every symbol at session ``i``."""
        b = i // BLOCK
        blk = self.block(b)
        k = i - b * BLOCK
        prev = blk[k - 1] if k > 0 else self.checkpoints[b]
        return prev, blk[k]

    # -- the start-up walk: checkpoints and splits -------------------------------------------
    def _walk(self, forced: list[tuple[int, int, str]]) -> SplitEvents:
        n = self.n
        log_f = np.zeros(n)
        cooldown = np.zeros(n, dtype=np.int64)
        events: list[tuple[int, int, int, int]] = []
        self.checkpoints[0] = self.p.log_p0
        forced_by_row: dict[int, list[tuple[int, str]]] = {}
        for s, row, kind in forced:
            forced_by_row.setdefault(row, []).append((s, kind))
        keep_from = self.n_blocks - self._cache_blocks
        for b in range(self.n_blocks):
            lo, hi = self._block_rows(b)
            closes = np.cumsum(self.returns(lo, hi, np.arange(n)), axis=0)
            closes += self.checkpoints[b][None, :]
            self.checkpoints[b + 1] = closes[-1]
            if b >= keep_from:
                self._remember(b, closes)
            lu = closes - log_f[None, :]
            trig = self._triggers(lo, hi, lu, cooldown, slice(None))
            extra = {r - lo: v for r, v in forced_by_row.items() if lo <= r < hi}
            for r, items in extra.items():
                for s, _ in items:
                    trig[r, s] = True
            for s in np.flatnonzero(trig.any(axis=0)).tolist():
                self._split_column(s, lo, hi, lu, trig[:, s], log_f, cooldown, extra, events)
        events.sort(key=lambda e: (e[1], e[0]))
        arr = np.array(events, dtype=np.int64).reshape(-1, 4)
        return SplitEvents(
            sym=arr[:, 0], session=arr[:, 1], split_from=arr[:, 2], split_to=arr[:, 3]
        )

    def _triggers(
        self, lo: int, hi: int, lu: F64, cooldown: I64, cols: slice | I64
    ) -> npt.NDArray[np.bool_]:
        rows = np.arange(lo, hi)[:, None]
        sym = np.arange(self.n)[cols]
        u = noise.unit(noise.combine(self.sym_key[sym][None, :], self.sess_key[lo:hi, None], SPLIT))
        eligible = (
            (rows >= self.list_i[sym][None, :] + MIN_AGE)
            & (rows + 1 < self.delist_i[sym][None, :])
            & (rows + 1 < self.n_sessions)
            & (rows >= cooldown[sym][None, :])
        )
        hot = (lu > self.p.log_split_high[sym][None, :]) | (lu < LOG_FLOOR) | (u < RANDOM_SPLIT_P)
        return eligible & hot

    def _split_column(
        self,
        s: int,
        lo: int,
        hi: int,
        lu: F64,
        trig: npt.NDArray[np.bool_],
        log_f: F64,
        cooldown: I64,
        forced: dict[int, list[tuple[int, str]]],
        events: list[tuple[int, int, int, int]],
    ) -> None:
        hits = np.flatnonzero(trig)
        while len(hits):
            t = int(hits[0])
            exec_i = lo + t + 1
            if exec_i >= min(self.n_sessions, int(self.delist_i[s])):
                return
            kind = next((k for sym, k in forced.get(t, []) if sym == s), "")
            frm, to = self._ratio(s, exec_i, float(lu[t, s]), kind)
            events.append((s, exec_i, frm, to))
            lr = math.log(to / frm)
            log_f[s] += lr
            lu[t + 1 :, s] -= lr
            cooldown[s] = exec_i + COOLDOWN
            if t + 1 >= hi - lo:
                return
            col = np.array([s])
            rest = self._triggers(lo + t + 1, hi, lu[t + 1 :, col], cooldown, col)[:, 0]
            for r in forced:
                if r > t and any(sym == s for sym, _ in forced[r]):
                    rest[r - t - 1] = True
            hits = np.flatnonzero(rest) + t + 1

    def _ratio(self, s: int, exec_i: int, lu: float, kind: str) -> tuple[int, int]:
        price = math.exp(lu)
        h = noise.scalar_key(int(self.sym_key[s]), exec_i)
        if kind == "forward":
            return 1, 4 if price >= 40 else 2
        if kind == "reverse":
            return 10, 1
        if kind == "stock":
            return STOCK_DIVIDEND
        ceiling = math.exp(float(self.p.log_split_high[s]))
        if price > ceiling:
            return 1, next(
                (r for r in _FORWARD_RATIOS if price / r < ceiling / 2.5), _FORWARD_RATIOS[-1]
            )
        if price < math.exp(LOG_FLOOR):
            return next((r for r in _REVERSE_RATIOS if price * r >= 5), _REVERSE_RATIOS[-1]), 1
        if price >= 15:
            return _RANDOM_FORWARD[h % len(_RANDOM_FORWARD)]
        return _RANDOM_REVERSE[h % len(_RANDOM_REVERSE)]
