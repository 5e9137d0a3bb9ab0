"""Binary COPY encoding, read back by an independent little parser of the documented format."""

from __future__ import annotations

import datetime as dt
import struct

import pyarrow as pa
import pytest

from core.stores import pgcopy

pytestmark = pytest.mark.unit
PG_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


def parse(data: bytes, types: list[str]) -> list[tuple[object, ...]]:
    """Rows of a binary COPY stream; ``types`` are struct codes, or 's' for text."""
    assert data.startswith(pgcopy.HEADER) and data.endswith(pgcopy.TRAILER)
    pos, rows = len(pgcopy.HEADER), []
    while pos < len(data) - len(pgcopy.TRAILER):
        (count,) = struct.unpack_from(">h", data, pos)
        pos += 2
        assert count == len(types)
        row: list[object] = []
        for code in types:
            (size,) = struct.unpack_from(">i", data, pos)
            pos += 4
            if size < 0:
                row.append(None)
                continue
            raw = data[pos : pos + size]
            pos += size
            row.append(raw.decode() if code == "s" else struct.unpack(">" + code, raw)[0])
        rows.append(tuple(row))
    return rows


def test_every_type_and_null_in_any_row_order() -> None:
    at = dt.datetime(2024, 1, 2, 21, 0, 0, 123456, tzinfo=dt.UTC)
    table = pa.table(
        {
            "s": pa.array(["A", None, "", "ÄÖÜ€-long-symbol"]),
            "d": pa.array([dt.date(2000, 1, 1), dt.date(1962, 1, 2), None, dt.date(2024, 1, 2)]),
            "f": pa.array([1.5, None, -0.0, 5e-324]),
            "i": pa.array([2**62, None, -1, 0], pa.int64()),
            "j": pa.array([1, 2, None, -(2**31)], pa.int32()),
            "t": pa.array([at, None, at, at], pa.timestamp("us", "UTC")),
        }
    )
    sliced = pa.concat_tables([table.slice(0, 1), table.slice(1)])  # chunks with offsets
    rows = parse(bytes(pgcopy.encode(sliced)), ["s", "i", "d", "q", "i", "q"])
    us = int((at - PG_EPOCH).total_seconds()) * 1_000_000 + at.microsecond
    want = {
        ("A", 0, 1.5, 2**62, 1, us),
        (None, (dt.date(1962, 1, 2) - dt.date(2000, 1, 1)).days, None, None, 2, None),
        ("", None, -0.0, -1, None, us),
        ("ÄÖÜ€-long-symbol", 8767, 5e-324, 0, -(2**31), us),
    }
    assert len(rows) == 4 and set(rows) == want  # rows leave grouped by layout


def test_empty_table_and_unknown_types() -> None:
    assert bytes(pgcopy.encode(pa.table({"x": pa.array([], pa.float64())}))) == (
        pgcopy.HEADER + pgcopy.TRAILER
    )
    with pytest.raises(TypeError, match="no encoder"):
        pgcopy.encode(pa.table({"b": pa.array([True])}))
