"""One renderer for tabular answers: JSON (default), CSV, Parquet and Arrow IPC.

The format comes from ``format=`` or, without it, from ``Accept`` (q-values honoured; 406 when
nothing acceptable can be served). Rows travel as Arrow from the data layer to the wire and are
encoded batch by batch, so no encoder ever holds more than one batch of Python objects or of
encoded bytes beyond what it has handed on: a whole-market answer is sent in chunks, in memory
bounded by the page size, never by the market.

JSON keeps the envelope the API has always had (``{"symbol": ..., "bars": [...]}``); the other
formats carry the envelope in headers (``Link`` for the next page, ``X-Served-By``) and, for
Parquet and Arrow, in the schema metadata under ``condvest``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Final

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from fastapi import Depends, Query
from starlette.requests import Request

from api.problems import Problem, clip

BATCH_ROWS: Final = 4096
"""Rows encoded at a time."""


class Format(enum.StrEnum):
    """An answer's encoding."""

    json = "json"
    csv = "csv"
    parquet = "parquet"
    arrow = "arrow"

    @property
    def media_type(self) -> str:
        """The Content-Type sent."""
        return MEDIA_TYPES[self]


MEDIA_TYPES: Final = {
    Format.json: "application/json",
    Format.csv: "text/csv; charset=utf-8",
    Format.parquet: "application/vnd.apache.parquet",
    Format.arrow: "application/vnd.apache.arrow.stream",
}
_BY_MEDIA: Final = {
    "application/json": Format.json,
    "text/csv": Format.csv,
    "application/vnd.apache.parquet": Format.parquet,
    "application/x-parquet": Format.parquet,
    "application/vnd.apache.arrow.stream": Format.arrow,
}
_PREFERENCE: Final = (Format.json, Format.csv, Format.parquet, Format.arrow)


def openapi_content(schema_ref: str) -> dict[str, Any]:
    """The ``content`` of a 200 response offered in every format (for route ``responses``)."""
    return {
        "application/json": {"schema": {"$ref": schema_ref}},
        "text/csv": {"schema": {"type": "string"}},
        "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
        "application/vnd.apache.arrow.stream": {"schema": {"type": "string", "format": "binary"}},
    }


def _accept_entries(header: str) -> list[tuple[str, float]]:
    out = []
    for item in header.split(",")[:32]:
        media, *params = (p.strip() for p in item.split(";"))
        q = 1.0
        for p in params:
            name, _, value = p.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if media:
            out.append((media.lower(), q))
    return out


def from_accept(header: str | None) -> Format | None:
    """The best format for an ``Accept`` header (JSON when absent or indifferent), or None."""
    if not header or not header.strip():
        return Format.json
    best: tuple[float, int, Format] | None = None
    for media, q in _accept_entries(header):
        if q <= 0:
            continue
        kind, _, sub = media.partition("/")
        if media in ("*/*", "*"):
            matches = list(_PREFERENCE)
        elif sub == "*":
            matches = [f for f in _PREFERENCE if MEDIA_TYPES[f].startswith(kind + "/")]
        else:
            matches = [f] if (f := _BY_MEDIA.get(media)) is not None else []
        for fmt in matches:
            candidate = (q, -_PREFERENCE.index(fmt), fmt)
            if best is None or candidate[:2] > best[:2]:
                best = candidate
    return best[2] if best else None


async def negotiate(
    request: Request,
    format: Annotated[
        Format | None,
        Query(description="json (default), csv, parquet or arrow; overrides Accept"),
    ] = None,
) -> Format:
    """The format asked for by ``format=``, else by ``Accept``; 406 when none can be served."""
    if format is not None:
        return format
    accept = request.headers.get("accept")
    fmt = from_accept(accept)
    if fmt is None:
        raise Problem(
            406,
            f"cannot serve {clip(accept or '')!r}: use application/json, text/csv, "
            "application/vnd.apache.parquet or application/vnd.apache.arrow.stream",
            kind="not-acceptable",
        )
    return fmt


Fmt = Annotated[Format, Depends(negotiate)]


class _Drain:
    """A write-only file whose bytes are taken out as they are written (a streaming sink)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | memoryview) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


def _json_columns(batch: pa.RecordBatch) -> list[list[Any]]:
    cols: list[list[Any]] = []
    for col in batch.columns:
        if pa.types.is_floating(col.type) and col.null_count == 0:
            cols.append(col.to_numpy(zero_copy_only=False).tolist())
        elif pa.types.is_date(col.type):
            cols.append(pc.cast(col, pa.string()).to_pylist())
        else:
            cols.append(col.to_pylist())
    return cols


def json_rows(batch: pa.RecordBatch) -> bytes:
    """The rows of ``batch`` as JSON objects, comma-separated, without brackets."""
    names = batch.schema.names
    rows = [
        dict(zip(names, values, strict=True)) for values in zip(*_json_columns(batch), strict=True)
    ]
    return orjson.dumps(rows, option=orjson.OPT_NON_STR_KEYS)[1:-1]


def _metadata(table: pa.Table, envelope: Mapping[str, Any]) -> pa.Schema:
    meta = dict(table.schema.metadata or {})
    meta[b"condvest"] = orjson.dumps(dict(envelope), default=str)
    return table.schema.with_metadata(meta)


def encode(
    fmt: Format, table: pa.Table, envelope: Mapping[str, Any], rows_key: str
) -> Iterator[bytes]:
    """``table`` (and, for JSON, the envelope around it) as chunks of ``fmt``."""
    batches = table.to_batches(max_chunksize=BATCH_ROWS)
    if fmt is Format.json:
        head = orjson.dumps(dict(envelope), default=str)
        yield head[:-1] + (b"," if len(head) > 2 else b"") + b'"' + rows_key.encode() + b'":['
        first = True
        for batch in batches:
            if batch.num_rows:
                yield (b"" if first else b",") + json_rows(batch)
                first = False
        yield b"]}"
        return
    sink = _Drain()
    writer: Any
    if fmt is Format.csv:
        writer = pacsv.CSVWriter(sink, table.schema)
    elif fmt is Format.parquet:
        writer = pq.ParquetWriter(sink, _metadata(table, envelope), compression="zstd")
    else:
        writer = pa.ipc.new_stream(sink, _metadata(table, envelope))
    if fmt is Format.csv and not batches:
        writer.write_table(table)  # the header line of an empty answer
    for batch in batches:
        if fmt is Format.parquet:
            writer.write_batch(batch, row_group_size=BATCH_ROWS * 4)
        else:
            writer.write_batch(batch)
        if chunk := sink.take():
            yield chunk
    writer.close()
    if chunk := sink.take():
        yield chunk
