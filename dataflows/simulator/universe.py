"""The simulated listings: tickers, names, types, exchanges, sectors and per-symbol parameters.

Everything is drawn from counter-based noise keyed by (seed, symbol index), so symbol ``i`` has
the same ticker, name and parameters in a 200-symbol market as in a 5,000-symbol one; only
listing and delisting dates depend on the market's date range.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from dataflows.simulator import noise

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

CS: Final = "CS"
ETF: Final = "ETF"
EXCHANGES: Final = ("XNYS", "XNAS")

# Well-known tickers first, so demos and examples can name them; their prices are simulated.
_FAMOUS: Final = (
    ("AAPL", "Apple Inc.", CS, "XNAS", "3571"),
    ("MSFT", "Microsoft Corp", CS, "XNAS", "7372"),
    ("NVDA", "Nvidia Corp", CS, "XNAS", "3674"),
    ("AMZN", "Amazon.Com Inc", CS, "XNAS", "5961"),
    ("GOOGL", "Alphabet Inc. Class A", CS, "XNAS", "7370"),
    ("META", "Meta Platforms, Inc. Class A", CS, "XNAS", "7370"),
    ("BRK.B", "Berkshire Hathaway Inc. Class B", CS, "XNYS", "6331"),
    ("JPM", "JPMorgan Chase & Co.", CS, "XNYS", "6021"),
    ("XOM", "Exxon Mobil Corp", CS, "XNYS", "2911"),
    ("TSLA", "Tesla, Inc.", CS, "XNAS", "3711"),
    ("SPY", "SPDR S&P 500 ETF Trust", ETF, "XNYS", ""),
    ("QQQ", "Invesco QQQ Trust, Series 1", ETF, "XNAS", ""),
)

SIC: Final = {
    "1311": "CRUDE PETROLEUM & NATURAL GAS",
    "2080": "BEVERAGES",
    "2834": "PHARMACEUTICAL PREPARATIONS",
    "2836": "BIOLOGICAL PRODUCTS, (NO DIAGNOSTIC SUBSTANCES)",
    "2911": "PETROLEUM REFINING",
    "3571": "ELECTRONIC COMPUTERS",
    "3674": "SEMICONDUCTORS & RELATED DEVICES",
    "3711": "MOTOR VEHICLES & PASSENGER CAR BODIES",
    "3841": "SURGICAL & MEDICAL INSTRUMENTS & APPARATUS",
    "4813": "TELEPHONE COMMUNICATIONS (NO RADIOTELEPHONE)",
    "4911": "ELECTRIC SERVICES",
    "5812": "RETAIL-EATING PLACES",
    "5961": "RETAIL-CATALOG & MAIL-ORDER HOUSES",
    "6021": "NATIONAL COMMERCIAL BANKS",
    "6022": "STATE COMMERCIAL BANKS",
    "6199": "FINANCE SERVICES",
    "6331": "FIRE, MARINE & CASUALTY INSURANCE",
    "6770": "BLANK CHECKS",
    "6798": "REAL ESTATE INVESTMENT TRUSTS",
    "7370": "SERVICES-COMPUTER PROGRAMMING, DATA PROCESSING, ETC.",
    "7372": "SERVICES-PREPACKAGED SOFTWARE",
}
_SIC_CODES: Final = tuple(SIC)

_ONSETS: Final = [
    "b",
    "br",
    "c",
    "ch",
    "cl",
    "d",
    "dr",
    "f",
    "fl",
    "g",
    "gr",
    "h",
    "j",
    "k",
    "kr",
    "l",
    "m",
    "n",
    "p",
    "pr",
    "qu",
    "r",
    "s",
    "sh",
    "st",
    "t",
    "tr",
    "v",
    "w",
    "z",
]
_VOWELS: Final = ["a", "e", "i", "o", "u", "ai", "ea", "io", "ou"]
_CODAS: Final = ["n", "r", "s", "x", "l", "m", "k", "t", "nd", "rk", "st"]
_SUFFIXES: Final = (
    "Inc.",
    "Corp",
    "Holdings Inc.",
    "Group Inc",
    "Technologies Inc.",
    "Therapeutics Inc",
    "Bancorp",
    "Industries",
    "Systems Inc.",
    "Energy Corp",
)
_ETF_SUFFIXES: Final = ("ETF", "Index Fund", "Select Sector ETF", "Dividend ETF", "Bond ETF")
_LETTERS: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LENGTHS: Final = (1, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 4, 4, 5)


@dataclass(frozen=True, slots=True)
class Listing:
    """Reference data of one symbol, as the tickers endpoints report it."""

    index: int
    ticker: str
    name: str
    type: str
    exchange: str
    sic_code: str | None
    sic_description: str | None
    list_date: dt.date
    delist_date: dt.date | None
    """First session without bars (Polygon's ``delisted_utc`` day); None while listed."""
    cik: str
    composite_figi: str
    share_class_figi: str


@dataclass(frozen=True, slots=True)
class Params:
    """Per-symbol model parameters as arrays indexed by symbol (vectorised generation)."""

    is_etf: npt.NDArray[np.bool_]
    log_p0: F64
    """Log price at listing (or at the start of the simulated history)."""
    sigma: F64
    beta: F64
    mu: F64
    log_volume: F64
    """Log of typical daily volume in shares at listing."""
    shares: F64
    """Shares outstanding at listing (market cap = price x shares, split-adjusted)."""
    trade_size: F64
    log_split_high: F64
    """Unadjusted log price above which the company splits its shares forward."""
    halt_p: F64


def _u(seed: int, stream: int, n: int) -> npt.NDArray[np.float64]:
    return noise.unit(noise.keys(noise.scalar_key(seed, 0x5EED, stream), np.arange(n)))


def _name(seed: int, i: int, etf: bool) -> str:
    k = noise.scalar_key(seed, 0x4E41, i)
    parts = []
    for syl in range(2 + (k >> 60) % 2):
        h = noise.scalar_key(k, syl)
        parts.append(_ONSETS[h % len(_ONSETS)] + _VOWELS[(h >> 16) % len(_VOWELS)])
    word = ("".join(parts) + _CODAS[(k >> 8) % len(_CODAS)]).capitalize()
    suffixes = _ETF_SUFFIXES if etf else _SUFFIXES
    return f"{word} {suffixes[(k >> 20) % len(suffixes)]}"


def _ticker(seed: int, i: int, word: str, taken: set[str]) -> str:
    """A 1-5 letter ticker, usually letters of the name in order; unique within ``taken``."""
    letters = [c for c in word.upper() if c in _LETTERS]
    for attempt in range(64):
        h = noise.scalar_key(seed, 0x7C, i, attempt)
        length = _LENGTHS[h % len(_LENGTHS)]
        if attempt < 8 and len(letters) > length:
            order = np.argsort(noise.keys(h, np.arange(len(letters) - 1)))[: length - 1]
            ticker = letters[0] + "".join(letters[int(j) + 1] for j in np.sort(order))
        else:
            ticker = "".join(_LETTERS[(h >> (5 * j + 8)) % 26] for j in range(max(length, 3)))
        if (h >> 58) % 61 == 0 and len(ticker) <= 3:
            ticker += ".B"
        if ticker not in taken:
            taken.add(ticker)
            return ticker
    msg = f"could not draw a unique ticker for symbol {i}"
    raise RuntimeError(msg)


def listings_static(seed: int, n: int) -> list[tuple[str, str, str, str, str | None]]:
    """(ticker, name, type, exchange, sic) of the first ``n`` symbols."""
    out: list[tuple[str, str, str, str, str | None]] = []
    taken: set[str] = set()
    etf = _u(seed, 1, n) < 0.12
    exch = _u(seed, 2, n)
    sic = _u(seed, 3, n)
    for i in range(n):
        if i < len(_FAMOUS):
            t, name, typ, ex, famous_code = _FAMOUS[i]
            taken.add(t)
            out.append((t, name, typ, ex, famous_code or None))
            continue
        is_etf = bool(etf[i])
        name = _name(seed, i, is_etf)
        ticker = _ticker(seed, i, name.split()[0], taken)
        ex = EXCHANGES[int(exch[i] < 0.55)]
        code = None if is_etf else _SIC_CODES[int(sic[i] * len(_SIC_CODES))]
        out.append((ticker, name, ETF if is_etf else CS, ex, code))
    return out


def params(seed: int, types: list[str]) -> Params:
    """Per-symbol model parameters; the famous few get large-cap, liquid settings."""
    n = len(types)
    is_etf = np.array([t == ETF for t in types], dtype=np.bool_)
    famous = np.arange(n) < len(_FAMOUS)
    z = [noise.logistic(_u(seed, 10 + k, n)) for k in range(8)]
    log_p0 = np.clip(np.log(40.0) + 0.9 * z[0], np.log(2.0), np.log(800.0))
    log_p0 = np.where(famous, np.log(120.0) + 0.4 * z[0], log_p0)
    sigma = np.where(
        is_etf,
        np.clip(0.011 * np.exp(0.25 * z[1]), 0.005, 0.02),
        np.clip(0.022 * np.exp(0.4 * z[1]), 0.008, 0.06),
    )
    sigma = np.where(famous & ~is_etf, np.clip(sigma, 0.012, 0.025), sigma)
    beta = np.where(is_etf, 0.95 + 0.05 * z[2], np.clip(1.0 + 0.35 * z[2], 0.2, 2.0))
    mu = 0.0002 + 0.0002 * z[3]
    log_cap = np.clip(np.log(2e9) + 1.5 * z[4], np.log(5e7), np.log(3e12))
    log_cap = np.where(famous, np.log(8e11) + 0.5 * z[4], log_cap)
    shares = np.exp(log_cap - log_p0)
    turnover = np.clip(0.006 * np.exp(0.5 * z[5]), 0.001, 0.05)
    log_volume = np.log(np.maximum(shares * turnover, 20_000.0))
    trade_size = np.clip(150.0 * np.exp(0.35 * z[6]), 60.0, 600.0)
    log_split_high = np.maximum(np.log(300.0) + 0.6 * np.abs(z[7]), log_p0 + np.log(3.0))
    halt_p = np.where(is_etf | famous, 0.0, 0.0015)
    return Params(
        is_etf=is_etf,
        log_p0=log_p0,
        sigma=sigma,
        beta=beta,
        mu=mu,
        log_volume=log_volume,
        shares=shares,
        trade_size=trade_size,
        log_split_high=log_split_high,
        halt_p=halt_p,
    )


def lifetimes(
    seed: int, n: int, n_sessions: int, window_first: int, n_famous: int = len(_FAMOUS)
) -> tuple[I64, I64]:
    """Listing and delisting session indices (local to the market's sessions).

    ``list_i`` 0 means listed at or before the first simulated session; ``delist_i`` equal to
    ``n_sessions`` means still listed. Some symbols list and some delist inside the replay
    window ``[window_first, n_sessions)``, a few more before it when history reaches back.
    """
    u = [_u(seed, 30 + k, n) for k in range(4)]
    list_i = np.zeros(n, dtype=np.int64)
    delist_i = np.full(n, n_sessions, dtype=np.int64)
    window = n_sessions - window_first
    idx = np.arange(n)
    eligible = idx >= n_famous
    if window >= 10:
        new = eligible & (u[0] < 0.06)
        list_i = np.where(new, window_first + 1 + (u[1] * (window - 5)).astype(np.int64), list_i)
        gone = eligible & ~new & (u[0] > 0.96)
        delist_i = np.where(
            gone, window_first + 5 + (u[2] * (window - 5)).astype(np.int64), delist_i
        )
        spare = np.flatnonzero(eligible)
        if len(spare) >= 2 and not new.any():
            list_i[spare[-1]] = window_first + window // 2
        if len(spare) >= 2 and not gone.any():
            delist_i[spare[-2]] = window_first + (2 * window) // 3
    if window_first >= 40:
        old = eligible & (list_i == 0) & (u[3] < 0.10)
        list_i = np.where(old, 1 + (u[1] * (window_first - 30)).astype(np.int64), list_i)
        early_gone = eligible & (delist_i == n_sessions) & (u[3] > 0.97)
        delist_i = np.where(
            early_gone,
            np.minimum(list_i + 25 + (u[2] * window_first).astype(np.int64), window_first),
            delist_i,
        )
    delist_i = np.maximum(delist_i, np.minimum(list_i + 20, n_sessions))
    return list_i, delist_i
