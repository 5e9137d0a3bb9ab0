"""Gold checkpoints: ``processing_metadata/gold_{I}_state.parquet``, one row per symbol.

Each row holds what the symbol's indicators were built from (the consolidation version, size
and mtime of data.parquet: :func:`batch.engine.planning.change_of` reads them as resample does; the
split version) and where the next run resumes: ``resume`` (date32) and the indicator state
(:mod:`core.indicators`) at that point. A change on or after ``resume`` is recomputed from the
state; an older change (a backfill) or a new split recomputes the symbol from its first bar.

``resume`` is the key of the last bar when that bar may still change (the last daily row, an
incomplete Fibonacci bar), with the state before it; after a complete Fibonacci bar it is the
first day the next bar can hold, with the state after it. Floats are stored as they are, so a
resumed run continues with the same bits as a full one.

The file's metadata holds the anchor the Fibonacci bars were built with, the lake's last date
(to flip ``complete`` when it advances) and a generation counter (shards stage under it).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from batch.engine.checkpoint import SymbolMark
from core import arrays, indicators, layout
from core.lake import Lake

FORMAT: Final = 1
META_KEY: Final = b"condvest.gold"
F64 = npt.NDArray[np.float64]

SCHEMA: Final = pa.schema(
    [
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("version", pa.int64()),
        pa.field("size", pa.int64(), nullable=False),
        pa.field("mtime_s", pa.int64(), nullable=False),
        pa.field("first_day", pa.date32(), nullable=False),
        pa.field("last_day", pa.date32(), nullable=False),
        pa.field("split_version", pa.string(), nullable=False),
        pa.field("resume", pa.date32(), nullable=False),
        *(pa.field(f"state_{n}", pa.float64()) for n in indicators.STATE_NAMES),
    ]
)


@dataclass
class GoldState:
    """One interval's checkpoint: per symbol its mark, split version, resume date and state."""

    interval: str
    anchor: str = "calendar"
    last_day: int | None = None
    generation: int = 0
    marks: dict[str, SymbolMark] = field(default_factory=dict)
    splits: dict[str, str] = field(default_factory=dict)
    resume: dict[str, int] = field(default_factory=dict)
    states: dict[str, tuple[float, ...]] = field(default_factory=dict)

    def drop(self, symbol: str) -> None:
        """Forget ``symbol`` (its data is gone)."""
        for held in (self.marks, self.splits, self.resume, self.states):
            held.pop(symbol, None)

    def header(self) -> dict[str, Any]:
        """The file-level fields."""
        return {
            "format": FORMAT,
            "interval": self.interval,
            "anchor": self.anchor,
            "last_day": self.last_day,
            "generation": self.generation,
        }

    def to_table(self) -> pa.Table:
        """The checkpoint as a table, sorted by symbol, header in its metadata."""
        names = sorted(self.resume)
        marks = [self.marks[s] for s in names]
        states = (
            np.array([self.states[s] for s in names], dtype=np.float64)
            if names
            else np.zeros((0, indicators.STATE_WIDTH))
        )
        versions = [m.version for m in marks]
        valid = np.array([v is not None for v in versions], dtype=bool)
        version = pa.array([v for v in versions], type=pa.int64()) if not valid.all() else None
        columns = [
            arrays.strings(names),
            version
            if version is not None
            else arrays.from_numpy(np.array(versions, dtype=np.int64)),
            arrays.from_numpy(np.array([m.size for m in marks], dtype=np.int64)),
            arrays.from_numpy(np.array([m.mtime_s for m in marks], dtype=np.int64)),
            arrays.from_numpy(np.array([m.first_day for m in marks], np.int32), pa.date32()),
            arrays.from_numpy(np.array([m.last_day for m in marks], np.int32), pa.date32()),
            arrays.strings([self.splits[s] for s in names]),
            arrays.from_numpy(np.array([self.resume[s] for s in names], np.int32), pa.date32()),
            *(
                arrays.from_numpy(np.ascontiguousarray(states[:, j]))
                for j in range(indicators.STATE_WIDTH)
            ),
        ]
        table = pa.table(columns, schema=SCHEMA)
        return table.replace_schema_metadata({META_KEY: json.dumps(self.header()).encode()})

    @classmethod
    def from_table(cls, table: pa.Table) -> GoldState:
        """Parse :meth:`to_table`."""
        meta = json.loads((table.schema.metadata or {})[META_KEY])
        if meta.get("format") != FORMAT:
            msg = f"unsupported gold state format {meta.get('format')!r}; rebuild with --full"
            raise ValueError(msg)
        out = cls(
            interval=str(meta["interval"]),
            anchor=str(meta["anchor"]),
            last_day=None if meta["last_day"] is None else int(meta["last_day"]),
            generation=int(meta["generation"]),
        )
        table = table.cast(SCHEMA)
        names = table["symbol"].to_pylist()
        versions = table["version"].to_pylist()
        ints = {
            c: np.asarray(
                arrays.to_numpy(
                    table[c].cast(pa.int32() if table[c].type == pa.date32() else pa.int64())
                ),
                dtype=np.int64,
            )
            for c in ("size", "mtime_s", "first_day", "last_day", "resume")
        }
        split_versions = table["split_version"].to_pylist()
        states = np.column_stack(
            [
                np.asarray(arrays.to_numpy(table[f"state_{n}"]), dtype=np.float64)
                for n in indicators.STATE_NAMES
            ]
        ) if names else np.zeros((0, indicators.STATE_WIDTH))  # fmt: skip
        # whole columns to Python at once: a market's checkpoint is thousands of rows a run
        fields = zip(
            versions,
            *(ints[c].tolist() for c in ("size", "mtime_s", "first_day", "last_day")),
            strict=True,
        )
        out.marks = {s: SymbolMark(*f) for s, f in zip(names, fields, strict=True)}
        out.splits = dict(zip(names, map(str, split_versions), strict=True))
        out.resume = dict(zip(names, ints["resume"].tolist(), strict=True))
        out.states = dict(zip(names, map(tuple, states.tolist()), strict=True))
        return out


def read(lake: Lake, interval: str) -> GoldState | None:
    """The checkpoint of ``interval``, or None before the first run."""
    key = layout.gold_state(interval)
    return read_from(lake, key) if lake.exists(key) else None


def write(lake: Lake, state: GoldState) -> None:
    """Write atomically (after the month files it describes)."""
    write_to(lake, layout.gold_state(state.interval), state)


def read_from(lake: Lake, key: str) -> GoldState:
    """A checkpoint stored at ``key`` (the interval's, or a shard's staged one)."""
    table = pq.ParquetFile(pa.BufferReader(lake.read_bytes(key))).read(use_threads=False)
    return GoldState.from_table(table)


def write_to(lake: Lake, key: str, state: GoldState) -> None:
    """Store a checkpoint at ``key``."""
    sink = pa.BufferOutputStream()
    pq.write_table(state.to_table(), sink, compression="zstd")
    lake.write_bytes(key, sink.getvalue())


def date_of(days: int | None) -> dt.date | None:
    """A date32 value as a date."""
    return None if days is None else dt.date(1970, 1, 1) + dt.timedelta(days=days)
