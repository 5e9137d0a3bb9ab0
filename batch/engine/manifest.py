"""The consolidation manifest: per symbol, what is merged into data.parquet and what changed.

One row per symbol in ``processing_metadata/consolidation_manifest.parquet``:

- ``fragments``: the fragments merged and still in the lake, each by key, size and listing
  mtime, so a fragment rewritten under the same name is merged again;
- ``version``: bumped on every write of data.parquet, with ``changes`` holding the earliest
  date each recent version changed (the last one also in ``earliest_changed``). Resampling
  checkpoints the version it has seen and restarts each symbol at the earliest change since,
  which is how a backfilled old date reaches silver;
- ``rows``, ``first_date``, ``last_date``, ``data_size`` of data.parquet as last written;
- ``revision``: bumped on every change of the row, to merge shard parts (below).

Crash safety: data.parquet carries its own state in its Parquet metadata and is written before
the manifest. A run that finds data.parquet ahead of the manifest (killed in between) adopts the
file's state, so merged fragments are not merged twice and no change is forgotten.

Shards: ``--shard I/N`` runs write ``consolidation_manifest.shard-I-of-N.parquet`` beside the
main file (their symbols are disjoint, so concurrent shards never overwrite each other);
readers take, per symbol, the row of highest revision over the main file and all parts, and an
unsharded run folds the parts back into the main file.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batch.engine import parts
from core import arrays, layout
from core.lake import Entry, Lake
from core.schemas import UTC_US
from core.sharding import Shard

MAX_CHANGES: Final = 64
"""Versions of change history kept per symbol; a resample further behind redoes the symbol."""
DATA_META_KEY: Final = b"condvest.consolidation"
_UNIX: Final = dt.date(1970, 1, 1)
_UNIX_UTC: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

FRAGMENT = pa.struct(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("size", pa.int64(), nullable=False),
        pa.field("mtime_us", pa.int64(), nullable=False),
    ]
)
CHANGE = pa.struct(
    [
        pa.field("version", pa.int64(), nullable=False),
        pa.field("earliest", pa.date32(), nullable=False),
    ]
)
SCHEMA: Final = pa.schema(
    [
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("revision", pa.int64(), nullable=False),
        pa.field("version", pa.int64(), nullable=False),
        pa.field("data_size", pa.int64()),
        pa.field("rows", pa.int64(), nullable=False),
        pa.field("first_date", pa.date32()),
        pa.field("last_date", pa.date32()),
        pa.field("earliest_changed", pa.date32()),
        pa.field("changed_at", UTC_US),
        pa.field("changes", pa.list_(CHANGE), nullable=False),
        pa.field("fragments", pa.list_(FRAGMENT), nullable=False),
    ]
)


@dataclass(frozen=True, slots=True, order=True)
class FragmentId:
    """A fragment as listed: rewriting it under the same key changes size or mtime."""

    key: str
    size: int
    mtime_us: int

    @classmethod
    def of(cls, entry: Entry) -> FragmentId:
        """Identity of a listed file."""
        mtime = entry.mtime or dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
        delta = mtime - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
        return cls(entry.key, entry.size, delta // dt.timedelta(microseconds=1))


@dataclass(slots=True)
class SymbolState:
    """One manifest row."""

    symbol: str
    revision: int = 0
    version: int = 0
    data_size: int | None = None
    rows: int = 0
    first_date: dt.date | None = None
    last_date: dt.date | None = None
    earliest_changed: dt.date | None = None
    changed_at: dt.datetime | None = None
    changes: list[tuple[int, dt.date]] = field(default_factory=list)
    fragments: list[FragmentId] = field(default_factory=list)

    def earliest_since(self, version: int) -> tuple[bool, dt.date | None]:
        """(known, earliest date changed by versions after ``version``).

        ``known`` is False when the history no longer reaches back to ``version`` (or the
        version is ahead of this state): the caller must redo the whole symbol.
        """
        if version == self.version:
            return True, None
        if version > self.version:
            return False, None
        seen = {v for v, _ in self.changes if v > version}
        if seen != set(range(version + 1, self.version + 1)):
            return False, None
        return True, min(d for v, d in self.changes if v > version)

    def with_change(self, earliest: dt.date, at: dt.datetime) -> SymbolState:
        """The state after one more write of data.parquet that changed ``earliest`` onwards."""
        version = self.version + 1
        changes = [*self.changes, (version, earliest)][-MAX_CHANGES:]
        return dataclasses.replace(
            self, version=version, earliest_changed=earliest, changed_at=at, changes=changes
        )

    # -- the copy carried inside data.parquet ------------------------------------------------
    def to_data_meta(self) -> bytes:
        """JSON stored in data.parquet's metadata (everything but ``data_size``)."""
        return json.dumps(
            {
                "symbol": self.symbol,
                "version": self.version,
                "rows": self.rows,
                "first_date": _iso(self.first_date),
                "last_date": _iso(self.last_date),
                "earliest_changed": _iso(self.earliest_changed),
                "changed_at": self.changed_at.isoformat() if self.changed_at else None,
                "changes": [[v, d.isoformat()] for v, d in self.changes],
                "fragments": [[f.key, f.size, f.mtime_us] for f in self.fragments],
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def from_data_meta(cls, raw: bytes) -> SymbolState:
        """Parse :meth:`to_data_meta`."""
        obj = json.loads(raw)
        return cls(
            symbol=obj["symbol"],
            version=int(obj["version"]),
            rows=int(obj["rows"]),
            first_date=_date(obj["first_date"]),
            last_date=_date(obj["last_date"]),
            earliest_changed=_date(obj["earliest_changed"]),
            changed_at=dt.datetime.fromisoformat(obj["changed_at"]) if obj["changed_at"] else None,
            changes=[(int(v), dt.date.fromisoformat(d)) for v, d in obj["changes"]],
            fragments=[FragmentId(k, int(s), int(m)) for k, s, m in obj["fragments"]],
        )


def _iso(day: dt.date | None) -> str | None:
    return day.isoformat() if day else None


def _date(text: str | None) -> dt.date | None:
    return dt.date.fromisoformat(text) if text else None


def _optional(values: list[int | None], type_: pa.DataType) -> pa.Array:
    """A nullable fixed-width column from Python ints (None for null), without pandas."""
    valid = np.array([v is not None for v in values], dtype=bool)
    data = np.array([0 if v is None else v for v in values], dtype=np.int64)
    if type_.bit_width == 32:
        data = data.astype(np.int32)
    if valid.all():
        return arrays.from_numpy(data, type_)
    bitmap = np.packbits(valid.astype(np.uint8), bitorder="little")
    return pa.Array.from_buffers(
        type_,
        len(values),
        [pa.py_buffer(bitmap), pa.py_buffer(data)],
        null_count=int((~valid).sum()),
    )


def _lists(counts: list[int], values: pa.Array) -> pa.Array:
    offsets = np.zeros(len(counts) + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    return pa.ListArray.from_arrays(arrays.from_numpy(offsets), values)


def _day(day: dt.date | None) -> int | None:
    return None if day is None else to_days(day)


def _to_table(states: Iterable[SymbolState]) -> pa.Table:
    # built column by column from buffers: Table.from_pylist goes through pandas (its import
    # costs seconds of CPU per process) and is slow for thousands of nested rows
    rows = sorted(states, key=lambda x: x.symbol)
    changes = [c for s in rows for c in s.changes]
    frags = [f for s in rows for f in s.fragments]
    change = pa.StructArray.from_arrays(
        [
            _optional([v for v, _ in changes], pa.int64()),
            _optional([to_days(d) for _, d in changes], pa.date32()),
        ],
        fields=list(CHANGE),
    )
    fragment = pa.StructArray.from_arrays(
        [
            arrays.strings([f.key for f in frags]),
            _optional([f.size for f in frags], pa.int64()),
            _optional([f.mtime_us for f in frags], pa.int64()),
        ],
        fields=list(FRAGMENT),
    )
    micros = [
        None if s.changed_at is None else (s.changed_at - _UNIX_UTC) // dt.timedelta(microseconds=1)
        for s in rows
    ]
    columns = [
        arrays.strings([s.symbol for s in rows]),
        _optional([s.revision for s in rows], pa.int64()),
        _optional([s.version for s in rows], pa.int64()),
        _optional([s.data_size for s in rows], pa.int64()),
        _optional([s.rows for s in rows], pa.int64()),
        _optional([_day(s.first_date) for s in rows], pa.date32()),
        _optional([_day(s.last_date) for s in rows], pa.date32()),
        _optional([_day(s.earliest_changed) for s in rows], pa.date32()),
        _optional(micros, SCHEMA.field("changed_at").type),
        _lists([len(s.changes) for s in rows], change),
        _lists([len(s.fragments) for s in rows], fragment),
    ]
    return pa.Table.from_arrays(columns, schema=SCHEMA)


def _from_table(table: pa.Table) -> list[SymbolState]:
    # column by column, timestamps by hand: Table.to_pylist converts a zoned timestamp
    # through pandas, whose import costs seconds of CPU in every process
    table = table.set_column(
        table.schema.get_field_index("changed_at"),
        "changed_at",
        pc.cast(table["changed_at"], pa.int64()),
    )
    cols = {name: table[name].to_pylist() for name in table.column_names}
    out = []
    for i, symbol in enumerate(cols["symbol"]):
        changed_us = cols["changed_at"][i]
        out.append(
            SymbolState(
                symbol=symbol,
                revision=cols["revision"][i],
                version=cols["version"][i],
                data_size=cols["data_size"][i],
                rows=cols["rows"][i],
                first_date=cols["first_date"][i],
                last_date=cols["last_date"][i],
                earliest_changed=cols["earliest_changed"][i],
                changed_at=None
                if changed_us is None
                else _UNIX_UTC + dt.timedelta(microseconds=changed_us),
                changes=[(c["version"], c["earliest"]) for c in cols["changes"][i]],
                fragments=[FragmentId(**f) for f in cols["fragments"][i]],
            )
        )
    return out


def read(lake: Lake) -> dict[str, SymbolState]:
    """The manifest: per symbol the row of highest revision over the main file and shard parts."""
    states: dict[str, SymbolState] = {}
    for table in parts.read_all(lake, layout.consolidation_manifest()):
        for s in _from_table(table):
            held = states.get(s.symbol)
            if held is None or s.revision > held.revision:
                states[s.symbol] = s
    return states


def write(lake: Lake, states: Mapping[str, SymbolState], shard: Shard) -> None:
    """Persist ``states`` (the whole manifest as this run sees it).

    Unsharded: the main file gets every row and shard parts are folded in (deleted after the
    main file is safely written). Sharded: only this shard's symbols go to its part file.
    """
    rows = (
        states.values()
        if shard.count == 1
        else [s for s in states.values() if shard.owns(s.symbol)]
    )
    parts.write(lake, layout.consolidation_manifest(), _to_table(rows), shard)


def to_days(day: dt.date) -> int:
    """A date as date32."""
    return (day - _UNIX).days
