"""DuckDB connections that can read the lake, local or S3, through one function.

DuckDB's own httpfs cannot be downloaded here, so S3 is reached through an fsspec filesystem
registered on the connection; local lakes are read by path directly.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import duckdb

from core.lake import Lake


@contextmanager
def connect(
    lake: Lake | None = None, *, threads: int | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB connection; with an S3 lake, ``s3://`` paths resolve through fsspec."""
    config: dict[str, Any] = {"threads": int(threads)} if threads else {}
    con = duckdb.connect(":memory:", config=config)
    try:
        if lake is not None and not lake.is_local:
            import s3fs

            kwargs: dict[str, object] = {}
            if lake.endpoint_url:
                kwargs["endpoint_url"] = lake.endpoint_url
            if key := os.environ.get("AWS_ACCESS_KEY_ID"):
                kwargs["key"] = key
                kwargs["secret"] = os.environ.get("AWS_SECRET_ACCESS_KEY")
            con.register_filesystem(s3fs.S3FileSystem(**kwargs))
        yield con
    finally:
        con.close()
