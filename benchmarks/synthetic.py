"""A synthetic US stock market in a local lake, for benchmarks: reproducible and cached.

Shape of the real thing (ENVIRONMENT.md, "Sizes worth knowing"): about 5,350 symbols and
22.6M daily rows since 1962. A few symbols trade the whole time, most list later (listings
grow denser toward the present), about a fifth are delisted, and trading halts leave gaps.
Prices are geometric random walks, volumes log-normal; every row is dated on an XNYS session.

The consolidated histories (``data.parquet``, no manifest) are generated once per parameter set
under ``benchmarks/.work/`` (git-ignored) and each benchmark run works on a hard-linked copy:
the jobs replace files atomically (write aside, rename), so the cached originals never change.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from batch.consolidate import write_data
from batch.engine.manifest import SymbolState
from core import calendar, layout
from core.bronze import FRAGMENT_COMPRESSION
from core.lake import Lake
from core.schemas import BRONZE_DAILY

WORK = Path(__file__).resolve().parent / ".work"
INGESTED = dt.datetime(2025, 7, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Spec:
    """What to generate."""

    symbols: int = 5_350
    target_rows: int = 22_600_000
    last: dt.date = dt.date(2025, 6, 27)
    seed: int = 1962

    @property
    def name(self) -> str:
        return f"market-{self.symbols}-{self.target_rows}-{self.last:%Y%m%d}-{self.seed}"


def symbol_names(count: int) -> list[str]:
    """Distinct tickers: AAA, AAB, ... (sorted)."""
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    out = []
    for i in range(count):
        a, rem = divmod(i, 26 * 26)
        b, c = divmod(rem, 26)
        out.append(letters[a % 26] + letters[b] + letters[c] + ("" if a < 26 else str(a // 26)))
    return sorted(out)


def spans(spec: Spec, n_sessions: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(first, last) session index of every symbol, scaled to about ``target_rows`` in total."""
    rng = np.random.default_rng(spec.seed)
    n = spec.symbols
    # fraction of the calendar each listing date leaves; recent listings are more common
    u = rng.beta(2.2, 1.0, n)
    full = rng.random(n) < 0.05  # traded since 1962
    delisted = rng.random(n) < 0.2
    life = rng.beta(1.2, 2.0, n)

    def total(scale: float) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], int]:
        first = np.where(full, 0, np.minimum(u**scale, 0.999) * (n_sessions - 1)).astype(np.int64)
        remaining = n_sessions - 1 - first
        last = np.where(delisted, first + (life * remaining).astype(np.int64), n_sessions - 1)
        return first, last, int((last - first + 1).sum())

    lo, hi = 0.05, 20.0  # bisect the skew (a larger one lists earlier) to match the total
    for _ in range(60):
        mid = (lo + hi) / 2
        if total(mid)[2] > spec.target_rows:
            hi = mid
        else:
            lo = mid
    first, last, _ = total((lo + hi) / 2)
    return first, last


def symbol_table(symbol: str, days: npt.NDArray[np.int32], rng: np.random.Generator) -> pa.Table:
    """A plausible daily history on the given sessions."""
    n = len(days)
    close = 20.0 * np.exp(np.cumsum(rng.normal(0.0002, 0.02, n)))
    open_ = close * np.exp(rng.normal(0, 0.005, n))
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 0.01, n)))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 0.01, n)))
    volume = np.round(rng.lognormal(12, 1.2, n))
    return pa.table(
        {
            "symbol": pa.array([symbol] * n, pa.string()),
            "date": pa.array(days, pa.date32()),
            "open": np.round(open_, 4),
            "high": np.round(high, 4),
            "low": np.round(low, 4),
            "close": np.round(close, 4),
            "volume": volume,
            "vwap": np.round((high + low + close) / 3, 4),
            "transactions": (volume // 50).astype(np.int64),
            "source": pa.array(["rest"] * n, pa.string()),
            "ingested_at": pa.array([INGESTED] * n, BRONZE_DAILY.field("ingested_at").type),
        }
    ).cast(BRONZE_DAILY)


def generate(spec: Spec, root: Path, workers: int = 4) -> int:
    """Write the market's consolidated histories under ``root``; returns the row count."""
    sessions = calendar.session_days()
    n_sessions = int(np.searchsorted(sessions, calendar.to_days(spec.last), side="right"))
    first, last = spans(spec, n_sessions)
    names = symbol_names(spec.symbols)
    lake = Lake(str(root))

    def one(i: int) -> int:
        rng = np.random.default_rng([spec.seed, i])
        days = sessions[first[i] : last[i] + 1]
        if len(days) > 50:  # a trading halt or two
            keep = np.ones(len(days), dtype=bool)
            for _ in range(rng.poisson(0.7)):
                at = int(rng.integers(0, len(days) - 10))
                keep[at : at + int(rng.integers(1, 8))] = False
            days = days[keep]
        table = symbol_table(names[i], days, rng)
        write_data(lake, names[i], table, SymbolState(names[i]))
        return int(table.num_rows)

    with ThreadPoolExecutor(workers) as ex:
        return sum(ex.map(one, range(spec.symbols)))


def cached(spec: Spec) -> Path:
    """The pristine lake of ``spec``, generated on first use."""
    root = WORK / spec.name
    done = root / "GENERATED"
    if not done.exists():
        shutil.rmtree(root, ignore_errors=True)
        started = time.perf_counter()
        rows = generate(spec, root / "lake")
        done.write_text(f"{rows}\n")
        print(f"generated {spec.name}: {rows:,} rows in {time.perf_counter() - started:.1f}s")
    return root / "lake"


def rows_of(spec: Spec) -> int:
    """Rows of a generated market."""
    return int((WORK / spec.name / "GENERATED").read_text())


def working_copy(spec: Spec, name: str) -> Lake:
    """A fresh hard-linked copy of the cached market under ``.work/runs/<name>``."""
    source = cached(spec)
    target = WORK / "runs" / name
    shutil.rmtree(target, ignore_errors=True)
    for folder, _, files in os.walk(source):
        rel = Path(folder).relative_to(source)
        (target / rel).mkdir(parents=True, exist_ok=True)
        for f in files:
            os.link(Path(folder) / f, target / rel / f)
    return Lake(str(target))


def add_session(lake: Lake, symbols: list[str], day: dt.date, seed: int = 0) -> int:
    """One new session for ``symbols``: a date= fragment each, as the daily replay writes it
    (same codec as :class:`core.bronze.BronzeSink`)."""
    days = np.array([calendar.to_days(day)], dtype=np.int32)
    ingested = dt.datetime.combine(day, dt.time(22), dt.UTC)

    def one(symbol: str) -> None:
        table = symbol_table(
            symbol, days, np.random.default_rng([seed, zlib.crc32(symbol.encode())])
        )
        table = table.set_column(
            table.schema.get_field_index("ingested_at"),
            "ingested_at",
            pa.array([ingested], BRONZE_DAILY.field("ingested_at").type),
        ).cast(BRONZE_DAILY)  # exactly the contract's schema, as BronzeSink writes it
        lake.write_parquet(
            layout.daily_fragment(symbol, day), table, compression=FRAGMENT_COMPRESSION
        )

    with ThreadPoolExecutor(8) as ex:
        list(ex.map(one, symbols))
    return len(symbols)


def main() -> None:
    p = argparse.ArgumentParser(description="generate (and cache) the synthetic market")
    p.add_argument("--symbols", type=int, default=Spec.symbols)
    p.add_argument("--rows", type=int, default=Spec.target_rows)
    ns = p.parse_args()
    spec = Spec(symbols=ns.symbols, target_rows=ns.rows)
    print(cached(spec), f"{rows_of(spec):,} rows")


if __name__ == "__main__":
    main()
