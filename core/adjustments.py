"""Corporate-action adjustment: the one place that defines S(d), T(d) and the split version.

Bronze and ``raw_ohlcv`` stay as received; every reader that wants adjusted prices (silver, gold,
the API) calls this module, so a split or dividend moves every series the same way, and a split
that arrives later re-adjusts history exactly instead of compounding an old adjustment.

- S(d), split factor of a row dated d: the product, in execution order, of split_from / split_to
  over the symbol's splits executed after d. Split-adjusted open, high, low, close and vwap are
  raw x S(d); volume is raw / S(d).
- T(d), total-return factor: S(d) times the product, in ex-date order, of (1 - cash_amount / C)
  over the symbol's USD cash dividends with ex-date after d, C being the raw close of the
  symbol's last row before that ex-date. A dividend without such a row, with cash_amount >= C,
  not in USD, or with a non-positive amount is skipped and reported (:class:`Skipped`), never
  guessed. Total-return prices are raw x T(d); volume stays raw / S(d).
- split version: a digest of the symbol's splits (dates and ratios only), which silver and gold
  record so a new or changed split rebuilds exactly the symbols it touches.

Dates travel as date32 day numbers (int32 days since 1970-01-01) in arrays, as elsewhere in the
lake code. Pure functions first; loading from the lake or Postgres at the end.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from core import arrays, layout
from core.lake import Lake
from core.schemas import ADJUSTMENTS, DIVIDENDS, SPLITS, conform

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

Mode = Literal["split", "none", "total"]
MODES: Final[tuple[Mode, ...]] = ("split", "none", "total")
DEFAULT_MODE: Final[Mode] = "split"
PRICE_COLUMNS: Final = ("open", "high", "low", "close", "vwap")
"""Columns multiplied by the price factor; ``volume`` is divided by S(d)."""
VENDOR_TOLERANCE: Final = 1e-6
"""A vendor factor further than this from ours (relative, absolute below 1) is reported."""
_UNIX: Final = dt.date(1970, 1, 1)


def to_days(day: dt.date) -> int:
    """A date as a date32 day number."""
    return (day - _UNIX).days


def from_days(days: int) -> dt.date:
    """A date32 day number as a date."""
    return _UNIX + dt.timedelta(days=int(days))


# -- the actions -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Split:
    """One split (forward, reverse or stock dividend).

    ``split_from`` old shares become ``split_to`` new ones on ``execution_date``, the first
    session at the new count.
    """

    execution_date: dt.date
    split_from: float
    split_to: float
    adjustment_type: str = "forward_split"
    vendor_factor: float | None = None
    id: str | None = None

    @property
    def ratio(self) -> float:
        """split_from / split_to: what a price before the split is multiplied by."""
        return float(self.split_from) / float(self.split_to)


@dataclass(frozen=True, slots=True)
class Dividend:
    """One cash dividend; ``cash_amount`` as declared, in the share basis of its ex-date."""

    ex_dividend_date: dt.date
    cash_amount: float
    currency: str = "USD"
    distribution_type: str = "recurring"
    vendor_factor: float | None = None
    id: str | None = None


@dataclass(frozen=True)
class Actions:
    """One symbol's splits and dividends, each sorted by date."""

    symbol: str
    splits: tuple[Split, ...] = ()
    dividends: tuple[Dividend, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "splits", tuple(sorted(self.splits, key=lambda s: s.execution_date))
        )
        object.__setattr__(
            self,
            "dividends",
            tuple(sorted(self.dividends, key=lambda d: (d.ex_dividend_date, d.distribution_type))),
        )

    @property
    def split_version(self) -> str:
        """:func:`split_version` of the splits."""
        return split_version(self.splits)


def split_version(splits: Iterable[Split]) -> str:
    """A digest of what S(d) depends on (execution dates and ratios), 16 hex digits.

    Ids, types and vendor factors are left out: changing them does not move a price.
    """
    h = hashlib.sha256(b"splits-v1")
    for s in sorted(splits, key=lambda x: x.execution_date):
        h.update(
            f"|{s.execution_date.isoformat()}:{float(s.split_from)!r}:{float(s.split_to)!r}".encode()
        )
    return h.hexdigest()[:16]


NO_SPLITS: Final = split_version(())
"""The split version of a symbol without splits."""


# -- S(d) ------------------------------------------------------------------------------------
def _suffix_products(values: Sequence[float]) -> list[float]:
    """``out[i]`` = values[i] x values[i + 1] x ... in that order, and a trailing 1.0."""
    return [math.prod(values[i:]) for i in range(len(values))] + [1.0]


def _day_array(days: npt.ArrayLike) -> I64:
    return np.asarray(days, dtype=np.int64)


def split_factors(days: npt.ArrayLike, splits: Sequence[Split]) -> F64:
    """S(d) of every date32 day in ``days``; ``splits`` sorted by execution date."""
    d = _day_array(days)
    if not splits:
        return np.ones(len(d), dtype=np.float64)
    executed = np.array([to_days(s.execution_date) for s in splits], dtype=np.int64)
    suffix = np.array(_suffix_products([s.ratio for s in splits]), dtype=np.float64)
    return np.asarray(suffix[np.searchsorted(executed, d, side="right")], dtype=np.float64)


def unchanged_from(old: Sequence[Split], new: Sequence[Split]) -> int | None:
    """The first day (date32) from which S(d) is the same under ``old`` and ``new`` splits.

    Rows dated on or after it keep their adjusted prices when the splits change from ``old``
    to ``new``, so bars made only of such rows need no rebuild. None when S(d) is the same
    everywhere (e.g. 2-for-4 replaced by 1-for-2).
    """
    points = sorted({to_days(s.execution_date) for s in (*old, *new)}, reverse=True)
    if not points:
        return None
    eve = np.array(points, dtype=np.int64) - 1
    before = split_factors(eve, sorted(old, key=lambda x: x.execution_date)).tolist()
    after = split_factors(eve, sorted(new, key=lambda x: x.execution_date)).tolist()
    for day, a, b in zip(points, before, after, strict=True):
        if a != b:
            return day
    return None


# -- dividends and T(d) ------------------------------------------------------------------------
CloseBefore = Callable[[dt.date], "tuple[dt.date, float] | None"]
"""(date, raw close) of the symbol's last row before a day, or None when it has none."""


def close_before_from(days: npt.ArrayLike, closes: npt.ArrayLike) -> CloseBefore:
    """A :data:`CloseBefore` over one symbol's raw rows (date32 days ascending, raw closes).

    The rows must reach back before every dividend that matters (the whole history does).
    """
    d = _day_array(days)
    c = np.asarray(closes, dtype=np.float64)

    def lookup(day: dt.date) -> tuple[dt.date, float] | None:
        i = int(np.searchsorted(d, to_days(day), side="left")) - 1
        return None if i < 0 else (from_days(int(d[i])), float(c[i]))

    return lookup


@dataclass(frozen=True, slots=True)
class Applied:
    """A dividend in T(d): its term (1 - cash_amount / C) and the row C came from."""

    dividend: Dividend
    close_date: dt.date
    close: float
    term: float


@dataclass(frozen=True, slots=True)
class Skipped:
    """A dividend that cannot be applied, and why: reported, never guessed."""

    symbol: str
    ex_dividend_date: dt.date
    distribution_type: str
    cash_amount: float
    currency: str
    reason: str

    def line(self) -> str:
        """One human-readable line."""
        return (
            f"{self.symbol} {self.distribution_type} dividend of {self.cash_amount:g} "
            f"{self.currency} ex {self.ex_dividend_date}: {self.reason}"
        )


def dividend_terms(
    symbol: str, dividends: Sequence[Dividend], close_before: CloseBefore
) -> tuple[list[Applied], list[Skipped]]:
    """The dividends T(d) applies, each with its term, and those it skips with the reason."""
    applied: list[Applied] = []
    skipped: list[Skipped] = []

    def skip(d: Dividend, reason: str) -> None:
        skipped.append(
            Skipped(
                symbol, d.ex_dividend_date, d.distribution_type, d.cash_amount, d.currency, reason
            )
        )

    for d in dividends:
        if d.currency.upper() != "USD":
            skip(d, f"paid in {d.currency}, not USD")
            continue
        if not math.isfinite(d.cash_amount) or d.cash_amount <= 0:
            skip(d, "cash_amount is not a positive amount")
            continue
        before = close_before(d.ex_dividend_date)
        if before is None:
            skip(d, "no row before the ex-dividend date to take the close from")
            continue
        day, close = before
        if not d.cash_amount < close:
            skip(d, f"cash_amount >= the close {close:g} of {day}")
            continue
        applied.append(Applied(d, day, close, 1.0 - d.cash_amount / close))
    return applied, skipped


def split_day_warnings(
    symbol: str, applied: Sequence[Applied], splits: Sequence[Split]
) -> list[str]:
    """Dividends whose C predates a split executed on or before their ex-date.

    C is then in the older share basis and cash_amount in the newer; T(d) takes C as the raw
    close all the same (the definition is exact), and says so.
    """
    out = []
    for a in applied:
        between = [
            s for s in splits if a.close_date < s.execution_date <= a.dividend.ex_dividend_date
        ]
        if between:
            out.append(
                f"{symbol} dividend ex {a.dividend.ex_dividend_date}: its close {a.close:g} of "
                f"{a.close_date} predates the split of {between[0].execution_date}"
            )
    return out


@dataclass(frozen=True)
class Factors:
    """Per row: what prices are multiplied by and volume divided by; what was left out."""

    mode: Mode
    price: F64
    volume: F64
    applied: tuple[Applied, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    warnings: tuple[str, ...] = ()


def _terms_factor(days: I64, applied: Sequence[Applied]) -> F64:
    """The dividend part of T(d): product of the terms of dividends with ex-date after d."""
    if not applied:
        return np.ones(len(days), dtype=np.float64)
    ex = np.array([to_days(a.dividend.ex_dividend_date) for a in applied], dtype=np.int64)
    suffix = np.array(_suffix_products([a.term for a in applied]), dtype=np.float64)
    return np.asarray(suffix[np.searchsorted(ex, days, side="right")], dtype=np.float64)


def factors(
    days: npt.ArrayLike,
    actions: Actions,
    mode: Mode = DEFAULT_MODE,
    close_before: CloseBefore | None = None,
    *,
    only_after: dt.date | None = None,
) -> Factors:
    """The factors of rows dated ``days`` (date32) under ``mode``.

    ``total`` needs ``close_before`` (the raw close before each ex-date, from the whole
    history, not only the rows being adjusted). ``only_after``: dividends on or before this
    day are left out (they move none of the rows of a window starting then), so they are
    neither looked up nor reported.
    """
    d = _day_array(days)
    if mode == "none":
        ones = np.ones(len(d), dtype=np.float64)
        return Factors(mode, ones, ones)
    s = split_factors(d, actions.splits)
    if mode == "split":
        return Factors(mode, s, s)
    if mode != "total":
        msg = f"unknown adjustment {mode!r}; choose one of {', '.join(MODES)}"
        raise ValueError(msg)
    if close_before is None:
        msg = "total-return factors need the raw close before each ex-date (close_before)"
        raise ValueError(msg)
    relevant = [
        x for x in actions.dividends if only_after is None or x.ex_dividend_date > only_after
    ]
    applied, skipped = dividend_terms(actions.symbol, relevant, close_before)
    warnings = split_day_warnings(actions.symbol, applied, actions.splits)
    price = s * _terms_factor(d, applied)
    return Factors(mode, price, s, tuple(applied), tuple(skipped), tuple(warnings))


def check_mode(text: str) -> Mode:
    """``text`` as a :data:`Mode`; ValueError naming the choices otherwise."""
    for m in MODES:
        if text == m:
            return m
    msg = f"unknown adjustment {text!r}; choose one of {', '.join(MODES)}"
    raise ValueError(msg)


# -- applying them -----------------------------------------------------------------------------
def adjust_arrays(
    f: Factors, prices: Mapping[str, npt.ArrayLike], volume: npt.ArrayLike | None = None
) -> tuple[dict[str, F64], F64 | None]:
    """Prices x ``f.price`` (NaN stays NaN) and volume / ``f.volume``, as new arrays."""
    out = {k: np.asarray(v, dtype=np.float64) * f.price for k, v in prices.items()}
    vol = None if volume is None else np.asarray(volume, dtype=np.float64) / f.volume
    return out, vol


def adjust_table(
    table: pa.Table,
    actions: Actions,
    mode: Mode = DEFAULT_MODE,
    close_before: CloseBefore | None = None,
    *,
    only_after: dt.date | None = None,
) -> tuple[pa.Table, Factors]:
    """One symbol's raw rows (a ``date`` column, any of open/high/low/close/vwap/volume) adjusted.

    For ``total`` without ``close_before`` the table itself must be the symbol's whole history
    (sorted by date): C is taken from its rows. ``only_after`` as for :func:`factors`.
    """
    days = arrays.date_days(table)
    if mode == "total" and close_before is None:
        close_before = close_before_from(days, arrays.to_numpy(table["close"]))
    f = factors(days, actions, mode, close_before, only_after=only_after)
    if mode == "none":
        return table, f
    for name in (*PRICE_COLUMNS, "volume"):
        if name not in table.column_names:
            continue
        col = table[name]
        typ = col.type
        if pa.types.is_null(typ):  # nothing to adjust
            continue
        values = arrays.to_numpy(pc.cast(col, pa.float64()))
        factor = f.volume if name == "volume" else f.price
        new = values / factor if name == "volume" else values * factor
        arr: pa.Array | pa.ChunkedArray = arrays.from_numpy(new)
        if col.null_count:
            arr = pc.if_else(pc.is_valid(col), arr, pa.scalar(None, pa.float64()))
        table = table.set_column(table.column_names.index(name), name, arr.cast(typ))
    return table, f


def adjust_records(
    records: Sequence[dict[str, Any]],
    actions: Actions,
    mode: Mode = DEFAULT_MODE,
    close_before: CloseBefore | None = None,
    *,
    only_after: dt.date | None = None,
) -> Factors:
    """Adjust dict rows (``date`` a date, prices floats or None) in place; their factors."""
    days = [to_days(r["date"]) for r in records]
    f = factors(days, actions, mode, close_before, only_after=only_after)
    if mode == "none":
        return f
    for r, p, s in zip(records, f.price.tolist(), f.volume.tolist(), strict=True):
        for name in PRICE_COLUMNS:
            if r.get(name) is not None:
                r[name] = r[name] * p
        if r.get("volume") is not None:
            r["volume"] = r["volume"] / s
    return f


# -- many symbols at once (silver) -------------------------------------------------------------
@dataclass(frozen=True)
class SplitBook:
    """Every symbol's splits; ``present`` is False when no splits file was ever written."""

    by_symbol: Mapping[str, tuple[Split, ...]] = field(default_factory=dict)
    present: bool = True

    def of(self, symbol: str) -> tuple[Split, ...]:
        """The symbol's splits, by execution date."""
        return self.by_symbol.get(symbol, ())

    def version(self, symbol: str) -> str:
        """The symbol's split version."""
        splits = self.by_symbol.get(symbol)
        return split_version(splits) if splits else NO_SPLITS

    def versions(self, symbols: Iterable[str]) -> dict[str, str]:
        """:meth:`version` of each symbol."""
        return {s: self.version(s) for s in symbols}


def segment_split_factors(
    symbols: Sequence[str], offsets: npt.ArrayLike, days: npt.ArrayLike, book: SplitBook
) -> tuple[I64, F64]:
    """Flat rows of many symbols (segment i = rows offsets[i]:offsets[i + 1], by date).

    Returns the indices of the rows whose S(d) is not 1 (those before a split) and their S(d),
    so callers touch only the rows a split moves.
    """
    off = _day_array(offsets)
    d = np.asarray(days)
    idx_parts: list[I64] = []
    f_parts: list[F64] = []
    for i, symbol in enumerate(symbols):
        splits = book.of(symbol)
        if not splits:
            continue
        lo, hi = int(off[i]), int(off[i + 1])
        last = to_days(splits[-1].execution_date)
        n = int(np.searchsorted(d[lo:hi], last, side="left"))
        if n == 0:
            continue
        idx_parts.append(np.arange(lo, lo + n, dtype=np.int64))
        f_parts.append(split_factors(d[lo : lo + n], splits))
    if not idx_parts:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    return np.concatenate(idx_parts), np.concatenate(f_parts)


# -- vendor factors ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Disagreement:
    """A vendor ``historical_adjustment_factor`` that differs from ours."""

    symbol: str
    kind: Literal["split", "dividend"]
    date: dt.date
    vendor: float
    ours: float | None
    note: str = ""

    def line(self) -> str:
        """One human-readable line."""
        ours = "not applied" if self.ours is None else f"{self.ours:.10g}"
        tail = f" ({self.note})" if self.note else ""
        return (
            f"{self.symbol} {self.kind} {self.date}: vendor {self.vendor:.10g}, ours {ours}{tail}"
        )


def _differs(vendor: float, ours: float) -> bool:
    return abs(vendor - ours) > VENDOR_TOLERANCE * max(1.0, abs(ours))


def vendor_disagreements(
    actions: Actions, close_before: CloseBefore | None = None
) -> list[Disagreement]:
    """Where the vendor's cumulative factors differ from ours by more than the tolerance.

    A split's vendor factor is compared with S on the day before it executes; a dividend's
    with the product of our dividend terms from its ex-date on (without ``close_before``,
    dividends are not compared).
    """
    out: list[Disagreement] = []
    if actions.splits:
        eve = [to_days(s.execution_date) - 1 for s in actions.splits]
        ours = split_factors(eve, actions.splits).tolist()
        for s, o in zip(actions.splits, ours, strict=True):
            if s.vendor_factor is not None and _differs(s.vendor_factor, o):
                out.append(
                    Disagreement(actions.symbol, "split", s.execution_date, s.vendor_factor, o)
                )
    if close_before is None or not actions.dividends:
        return out
    applied, skipped = dividend_terms(actions.symbol, actions.dividends, close_before)
    why = {(k.ex_dividend_date, k.distribution_type): k.reason for k in skipped}
    eve_d = np.array([to_days(d.ex_dividend_date) - 1 for d in actions.dividends], np.int64)
    cumulative = _terms_factor(eve_d, applied).tolist()
    for d, o in zip(actions.dividends, cumulative, strict=True):
        if d.vendor_factor is None:
            continue
        reason = why.get((d.ex_dividend_date, d.distribution_type))
        if reason is not None:
            out.append(
                Disagreement(actions.symbol, "dividend", d.ex_dividend_date, d.vendor_factor,
                             None, reason)
            )  # fmt: skip
        elif _differs(d.vendor_factor, o):
            out.append(
                Disagreement(actions.symbol, "dividend", d.ex_dividend_date, d.vendor_factor, o)
            )
    return out


# -- loading -----------------------------------------------------------------------------------
def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


def splits_of_rows(rows: Iterable[Mapping[str, Any]]) -> tuple[Split, ...]:
    """Split objects from SPLITS-shaped rows (dicts)."""
    return tuple(
        Split(
            r["execution_date"],
            float(r["split_from"]),
            float(r["split_to"]),
            str(r["adjustment_type"]),
            _opt_float(r.get("vendor_factor")),
            r.get("id"),
        )
        for r in rows
    )


def dividends_of_rows(rows: Iterable[Mapping[str, Any]]) -> tuple[Dividend, ...]:
    """Dividend objects from DIVIDENDS-shaped rows (dicts)."""
    return tuple(
        Dividend(
            r["ex_dividend_date"],
            float(r["cash_amount"]),
            str(r["currency"]),
            str(r["distribution_type"]),
            _opt_float(r.get("vendor_factor")),
            r.get("id"),
        )
        for r in rows
    )


def _grouped(table: pa.Table, symbols: Iterable[str] | None) -> dict[str, list[dict[str, Any]]]:
    if symbols is not None:
        wanted = list(symbols)
        table = table.filter(pc.is_in(table["symbol"], pa.array(wanted, pa.string())))
    out: dict[str, list[dict[str, Any]]] = {}
    for r in table.to_pylist():
        out.setdefault(r["symbol"], []).append(r)
    return out


def read_splits(lake: Lake) -> pa.Table | None:
    """``reference/splits/splits.parquet`` as SPLITS, or None when it was never written."""
    key = layout.reference_splits()
    return conform(lake.read_table(key), SPLITS) if lake.exists(key) else None


def read_dividends(lake: Lake) -> pa.Table | None:
    """``reference/dividends/dividends.parquet`` as DIVIDENDS, or None when never written."""
    key = layout.reference_dividends()
    return conform(lake.read_table(key), DIVIDENDS) if lake.exists(key) else None


def split_book(lake: Lake, symbols: Iterable[str] | None = None) -> SplitBook:
    """Every symbol's splits from the lake (``present`` False when there is no splits file)."""
    table = read_splits(lake)
    if table is None:
        return SplitBook({}, present=False)
    rows = _grouped(table.select(["symbol", "execution_date", "split_from", "split_to",
                                  "adjustment_type", "vendor_factor", "id"]), symbols)  # fmt: skip
    return SplitBook({s: tuple(sorted(splits_of_rows(r), key=lambda x: x.execution_date))
                      for s, r in rows.items()})  # fmt: skip


def actions_from_tables(
    splits: pa.Table | None, dividends: pa.Table | None, symbols: Iterable[str] | None = None
) -> dict[str, Actions]:
    """Per symbol, the actions in SPLITS and DIVIDENDS tables (either may be None)."""
    wanted = None if symbols is None else list(symbols)
    by_split = _grouped(splits, wanted) if splits is not None else {}
    by_div = _grouped(dividends, wanted) if dividends is not None else {}
    return {
        s: Actions(s, splits_of_rows(by_split.get(s, [])), dividends_of_rows(by_div.get(s, [])))
        for s in sorted(set(by_split) | set(by_div))
    }


def load_actions(lake: Lake, symbols: Iterable[str] | None = None) -> dict[str, Actions]:
    """Per symbol, its actions from the lake's reference files (symbols without any absent)."""
    return actions_from_tables(read_splits(lake), read_dividends(lake), symbols)


def actions_of(lake: Lake, symbol: str) -> Actions:
    """One symbol's actions from the lake (empty when it has none)."""
    return load_actions(lake, [symbol]).get(symbol, Actions(symbol))


_PG_SPLITS: Final = (
    "SELECT execution_date, split_from, split_to, adjustment_type, vendor_factor, id"
    " FROM splits WHERE symbol = %s ORDER BY execution_date"
)
_PG_DIVIDENDS: Final = (
    "SELECT ex_dividend_date, cash_amount, currency, distribution_type, vendor_factor, id"
    " FROM dividends WHERE symbol = %s ORDER BY ex_dividend_date, distribution_type"
)


def pg_actions(conn: Any, symbol: str) -> Actions | None:
    """One symbol's actions from Postgres (a psycopg connection).

    None when the tables are missing: corporate actions were never fetched into this database.
    """
    import psycopg
    from psycopg.rows import dict_row

    try:
        with conn.cursor(row_factory=dict_row) as cur:
            splits = splits_of_rows(cur.execute(_PG_SPLITS, (symbol,)).fetchall())
            dividends = dividends_of_rows(cur.execute(_PG_DIVIDENDS, (symbol,)).fetchall())
    except psycopg.errors.UndefinedTable:
        conn.rollback()
        return None
    return Actions(symbol, splits, dividends)


# -- what silver was built with ----------------------------------------------------------------
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def read_recorded(lake: Lake) -> dict[str, tuple[str, dt.datetime]]:
    """``processing_metadata/adjustments.parquet``: symbol -> (split version, applied at)."""
    key = layout.adjustments()
    if not lake.exists(key):
        return {}
    table = conform(lake.read_table(key), ADJUSTMENTS)
    # instants from their microseconds: to_pylist of a zoned timestamp loads pandas (about 1 s
    # of a fresh process's start, which every resample pays)
    micros = table["applied_at"].cast(pa.int64()).to_pylist()
    applied = [_EPOCH + dt.timedelta(microseconds=m) for m in micros]
    return dict(
        zip(
            table["symbol"].to_pylist(),
            zip(table["split_version"].to_pylist(), applied, strict=True),
            strict=True,
        )
    )


def changed_symbols(current: Mapping[str, str], recorded: Mapping[str, str]) -> set[str]:
    """Symbols whose split version differs from the one recorded (or was never recorded)."""
    return {s for s, v in current.items() if recorded.get(s) != v}


def recorded_rows(
    versions: Mapping[str, str],
    previous: Mapping[str, tuple[str, dt.datetime]],
    now: dt.datetime,
) -> dict[str, tuple[str, dt.datetime]]:
    """Per symbol of ``versions``: (split version, applied at), sorted by symbol.

    An unchanged version keeps its ``applied_at``.
    """
    return {
        s: (v, previous[s][1] if s in previous and previous[s][0] == v else now)
        for s, v in sorted(versions.items())
    }


def record_table(
    versions: Mapping[str, str],
    previous: Mapping[str, tuple[str, dt.datetime]],
    now: dt.datetime,
) -> pa.Table:
    """ADJUSTMENTS rows of :func:`recorded_rows` (built without pandas, as read_recorded)."""
    rows = recorded_rows(versions, previous, now)
    micros = [(at - _EPOCH) // dt.timedelta(microseconds=1) for _, at in rows.values()]
    return pa.table(
        [
            arrays.strings(list(rows)),
            arrays.strings([v for v, _ in rows.values()]),
            arrays.from_numpy(
                np.array(micros, dtype=np.int64), ADJUSTMENTS.field("applied_at").type
            ),
        ],
        schema=ADJUSTMENTS,
    )


def write_recorded(lake: Lake, table: pa.Table) -> None:
    """Write ``processing_metadata/adjustments.parquet`` (after the silver it describes)."""
    lake.write_table(layout.adjustments(), conform(table, ADJUSTMENTS))
