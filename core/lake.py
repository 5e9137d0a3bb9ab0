"""One storage port for the lake, addressed by URL (``file://``, a path, or ``s3://``).

Local and S3 share the layout, listing and Parquet encoding, so tests on a temporary directory
exercise what production runs; only the byte transport differs (plain OS calls on a local
disk, where a pyarrow filesystem stream costs an extra directory creation and stat per file).
Writes are atomic: a reader sees the old object or the new one, never half a file (local: write
a temporary file in the same directory, then rename it over the key; S3: a PUT is atomic).
"""

from __future__ import annotations

import builtins
import datetime as dt
import json
import os
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

PARQUET_COMPRESSION = "zstd"


class LakeError(RuntimeError):
    """A lake operation failed; the message names the object."""


@contextmanager
def reading(key: str) -> Iterator[None]:
    """Make an error met while reading or decoding ``key`` name it, so a bad file can be found."""
    try:
        yield
    except LakeError:
        raise
    except (OSError, pa.ArrowException, ValueError, TypeError) as exc:
        msg = f"cannot read {key}: {type(exc).__name__}: {exc}"
        raise LakeError(msg) from exc


@dataclass(frozen=True, slots=True)
class Entry:
    """A file in the lake: key relative to the root, size in bytes, modification time."""

    key: str
    size: int
    mtime: dt.datetime | None


def _s3_filesystem(endpoint_url: str | None, region: str | None) -> pafs.S3FileSystem:
    kwargs: dict[str, Any] = {"region": region or os.environ.get("AWS_DEFAULT_REGION", "us-east-1")}
    if endpoint_url:
        parsed = urlparse(endpoint_url)
        kwargs["endpoint_override"] = parsed.netloc or parsed.path
        kwargs["scheme"] = parsed.scheme or "http"
        kwargs["allow_bucket_creation"] = True
    access = os.environ.get("AWS_ACCESS_KEY_ID")
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY")
    if access and secret:
        kwargs["access_key"] = access
        kwargs["secret_key"] = secret
        if token := os.environ.get("AWS_SESSION_TOKEN"):
            kwargs["session_token"] = token
    return pafs.S3FileSystem(**kwargs)


class Lake:
    """The lake root and the operations every job needs on it."""

    def __init__(self, url: str, *, endpoint_url: str | None = None, region: str | None = None):
        self.endpoint_url = endpoint_url
        self.region = region
        parsed = urlparse(url)
        self.fs: pafs.FileSystem
        if parsed.scheme == "s3":
            if not parsed.netloc:
                msg = f"lake URL {url!r} has no bucket"
                raise LakeError(msg)
            self.fs = _s3_filesystem(endpoint_url, region)
            self.root = f"{parsed.netloc}/{parsed.path.strip('/')}".rstrip("/")
            self.url = f"s3://{self.root}"
            self.is_local = False
        elif parsed.scheme in ("file", ""):
            if parsed.scheme == "file" and parsed.netloc not in ("", "localhost"):
                msg = (
                    f"lake URL {url!r} names the host {parsed.netloc!r}; a local path needs "
                    f"three slashes: file:///{parsed.netloc}{parsed.path}"
                )
                raise LakeError(msg)
            path = Path(unquote(parsed.path) if parsed.scheme == "file" else url)
            path = path.expanduser().resolve()
            self.fs = pafs.LocalFileSystem()
            self.root = str(path)
            self.url = path.as_uri()
            self.is_local = True
        else:
            msg = (
                f"unsupported lake URL {url!r}: use file:///abs/path, a path, or s3://bucket/prefix"
            )
            raise LakeError(msg)

    def __repr__(self) -> str:
        return f"Lake({self.url!r})"

    def path(self, key: str) -> str:
        """Filesystem path of ``key`` (for pyarrow)."""
        return f"{self.root}/{key.lstrip('/')}"

    def uri(self, key: str) -> str:
        """Full URL of ``key`` (for DuckDB or logs)."""
        return f"{self.url}/{key.lstrip('/')}"

    # -- reads ---------------------------------------------------------------------------------
    def exists(self, key: str) -> bool:
        """True when ``key`` is a file."""
        if self.is_local:
            return os.path.isfile(self.path(key))
        return bool(self.fs.get_file_info(self.path(key)).type == pafs.FileType.File)

    def read_table(self, key: str, columns: Sequence[str] | None = None) -> pa.Table:
        """Read one Parquet file."""
        cols = list(columns) if columns else None
        try:
            if self.is_local:  # one file: no dataset discovery, and no pandas import
                return pq.ParquetFile(self.path(key)).read(columns=cols)
            return pq.read_table(self.path(key), filesystem=self.fs, columns=cols)
        except (OSError, pa.ArrowInvalid) as exc:
            msg = f"cannot read {self.uri(key)}: {exc}"
            raise LakeError(msg) from exc

    def read_tables(self, keys: Sequence[str], columns: Sequence[str] | None = None) -> pa.Table:
        """Read many Parquet files of one schema into one table (threaded by pyarrow)."""
        if not keys:
            msg = "read_tables needs at least one key"
            raise LakeError(msg)
        dataset = pq.ParquetDataset([self.path(k) for k in keys], filesystem=self.fs)
        return dataset.read(columns=list(columns) if columns else None, use_threads=True)

    def read_bytes(self, key: str) -> bytes:
        """Read a small object whole."""
        if self.is_local:
            with open(self.path(key), "rb") as fh:
                return fh.read()
        with self.fs.open_input_stream(self.path(key)) as f:
            data: bytes = f.read()
        return data

    def read_json(self, key: str, default: Any = None) -> Any:
        """Read a JSON object, or ``default`` when it does not exist."""
        if not self.exists(key):
            return default
        return json.loads(self.read_bytes(key))

    def list(self, prefix: str = "", *, suffix: str = "") -> builtins.list[Entry]:
        """Files under ``prefix`` (recursive), sorted by key."""
        base = self.path(prefix).rstrip("/")
        info = self.fs.get_file_info(base)
        if info.type == pafs.FileType.NotFound:
            return []
        if info.type == pafs.FileType.File:
            entries = [info]
        else:
            entries = self.fs.get_file_info(pafs.FileSelector(base, recursive=True))
        out = []
        cut = len(self.root) + 1
        for e in entries:
            if e.type != pafs.FileType.File or not e.path.endswith(suffix):
                continue
            key = e.path[cut:]
            if "/_tmp-" in key or key.startswith("_tmp-"):
                continue
            mtime = e.mtime
            if mtime is not None and mtime.tzinfo is None:
                mtime = mtime.replace(tzinfo=dt.UTC)
            out.append(Entry(key, int(e.size or 0), mtime))
        out.sort(key=lambda x: x.key)
        return out

    def list_dirs(self, prefix: str) -> builtins.list[str]:
        """Immediate sub-folder names under ``prefix``."""
        base = self.path(prefix).rstrip("/")
        if self.fs.get_file_info(base).type != pafs.FileType.Directory:
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=False))
        return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)

    # -- writes --------------------------------------------------------------------------------
    @contextmanager
    def _sink(self, key: str) -> Iterator[pa.NativeFile]:
        """An output stream for ``key`` whose content appears there atomically when it closes.

        Local: a temporary file beside the key, renamed over it (``os.replace``); the directory
        is created only when the open finds it missing, and nothing is left on failure. S3: the
        object stream, whose PUT is atomic.
        """
        final = self.path(key)
        if not self.is_local:
            with self.fs.open_output_stream(final) as stream:
                yield stream
            return
        parent = final.rpartition("/")[0]
        tmp = f"{parent}/_tmp-{uuid.uuid4().hex}"
        try:
            sink = pa.OSFile(tmp, "wb")
        except FileNotFoundError:
            os.makedirs(parent, exist_ok=True)
            sink = pa.OSFile(tmp, "wb")
        try:
            with sink:
                yield sink
            os.replace(tmp, final)
        except BaseException:
            with suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def write_table(
        self,
        key: str,
        table: pa.Table,
        *,
        row_group_size: int | None = None,
        statistics: Sequence[str] | None = None,
        row_groups: Sequence[int] | None = None,
    ) -> int:
        """Write ``table`` to ``key`` atomically (zstd); returns bytes written.

        ``statistics``: the columns whose row-group statistics are kept (default all); fewer
        make a smaller footer, which a reader of many small row groups parses on every open.
        ``row_groups``: the rows of each row group in order (summing to the table's rows), for
        groups cut where a reader's unit ends (one symbol's day) rather than every N rows.
        """
        return self.write_parquet(
            key, table, row_group_size=row_group_size, statistics=statistics, row_groups=row_groups
        )

    def write_parquet(
        self,
        key: str,
        table: pa.Table,
        *,
        row_group_size: int | None = None,
        compression: str = PARQUET_COMPRESSION,
        statistics: Sequence[str] | None = None,
        row_groups: Sequence[int] | None = None,
        dictionary: Sequence[str] | None = None,
    ) -> int:
        """:meth:`write_table` with a choice of compression; returns bytes written.

        Other codecs than zstd suit tiny files: a zstd context per column chunk costs about
        2 ms, which dominates a one-row fragment (and a few hundredths of a ms on each read of
        a chunk, which dominates a read of many small row groups). ``dictionary``: the columns
        dictionary-encoded (default all); repetitive ones only spares decoding a dictionary page
        per chunk of the others.
        """
        stats: bool | list[str] = True if statistics is None else list(statistics)
        dicts: bool | list[str] = True if dictionary is None else list(dictionary)
        if row_groups is not None and sum(row_groups) != table.num_rows:
            msg = f"{key}: row groups of {sum(row_groups)} rows for a table of {table.num_rows}"
            raise LakeError(msg)
        with self._sink(key) as sink:
            if row_groups is None:
                pq.write_table(
                    table,
                    sink,
                    compression=compression,
                    row_group_size=row_group_size,
                    write_statistics=stats,
                    use_dictionary=dicts,
                )
            else:
                with pq.ParquetWriter(
                    sink,
                    table.schema,
                    compression=compression,
                    write_statistics=stats,
                    use_dictionary=dicts,
                ) as writer:
                    offset = 0
                    for rows in row_groups:
                        writer.write_table(table.slice(offset, rows), row_group_size=rows)
                        offset += rows
            size = sink.tell()  # the stream's position: no stat (or HEAD) afterwards
        return int(size)

    def write_bytes(self, key: str, data: bytes | pa.Buffer) -> None:
        """Write a small object atomically."""
        with self._sink(key) as sink:
            sink.write(data)

    def write_json(self, key: str, obj: Any) -> None:
        """Write a JSON object atomically (sorted keys, so equal content gives equal bytes)."""
        self.write_bytes(key, json.dumps(obj, sort_keys=True, default=str).encode())

    def delete(self, key: str) -> None:
        """Delete one file; a missing file is not an error (deletes are idempotent)."""
        with suppress(FileNotFoundError):
            self.fs.delete_file(self.path(key))

    def delete_prefix(self, prefix: str) -> None:
        """Delete everything under ``prefix``."""
        base = self.path(prefix).rstrip("/")
        if self.fs.get_file_info(base).type == pafs.FileType.Directory:
            self.fs.delete_dir(base)


def open_lake(url: str | None = None, *, endpoint_url: str | None = None) -> Lake:
    """The lake of ``url`` or of the settings (``LAKE_URL``, ``AWS_ENDPOINT_URL``)."""
    from core.settings import LakeSettings

    settings = LakeSettings()
    return Lake(
        url or settings.lake_url,
        endpoint_url=endpoint_url or settings.aws_endpoint_url,
        region=settings.aws_default_region,
    )
