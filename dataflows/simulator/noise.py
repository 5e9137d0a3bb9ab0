"""Counter-based noise: every random number is a pure function of (seed, stream, symbol, step).

A sequential generator would make a session's bars depend on which other sessions or symbols
were generated first. Hashing the coordinates instead (splitmix64, vectorised over numpy arrays)
lets any slice of the market be generated on its own and still agree with every other slice.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

U64 = npt.NDArray[np.uint64]
F64 = npt.NDArray[np.float64]

_MASK: Final = (1 << 64) - 1
_GOLDEN: Final = 0x9E3779B97F4A7C15
_M1: Final = np.uint64(0xBF58476D1CE4E5B9)
_M2: Final = np.uint64(0x94D049BB133111EB)
_S30: Final = np.uint64(30)
_S27: Final = np.uint64(27)
_S31: Final = np.uint64(31)
_S11: Final = np.uint64(11)
_TO_UNIT: Final = 2.0**-53


def mix(x: U64) -> U64:
    """The splitmix64 finaliser, in place on a fresh array (the input is not modified)."""
    z = x ^ (x >> _S30)
    z *= _M1
    z ^= z >> _S27
    z *= _M2
    z ^= z >> _S31
    return z


def scalar_key(*parts: int) -> int:
    """Combine integers into one 64-bit key (Python ints, so no numpy overflow warnings)."""
    h = 0x243F6A8885A308D3
    for p in parts:
        h = (h ^ (p & _MASK)) * _GOLDEN & _MASK
        h ^= h >> 29
        h = h * 0xBF58476D1CE4E5B9 & _MASK
        h ^= h >> 32
    return h


def keys(base: int, idx: npt.ArrayLike) -> U64:
    """One hashed key per index: ``mix(base + idx * golden)``."""
    arr = np.asarray(idx, dtype=np.int64).astype(np.uint64)
    arr *= np.uint64(_GOLDEN)
    arr += np.uint64(base & _MASK)
    return mix(arr)


def combine(a: U64, b: U64, stream: int) -> U64:
    """Hash two broadcastable key arrays and a stream number into fresh keys."""
    return mix(a ^ b ^ np.uint64(scalar_key(stream)))


def unit(h: U64) -> F64:
    """Uniform floats strictly inside (0, 1) from 64-bit keys."""
    out = (h >> _S11).astype(np.float64)
    out += 0.5
    out *= _TO_UNIT
    return out


def logistic(u: F64) -> F64:
    """Standardised logistic variates (unit variance): fatter tails than a normal, cheap."""
    out: F64 = np.log(u / (1.0 - u))
    out *= np.sqrt(3.0) / np.pi
    return out


def normal(u1: F64, u2: F64) -> F64:
    """Standard normal variates by Box-Muller."""
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
