"""Kinesis: a source partitioned by shard, and the PutRecords sink of the ws-ingest task.

Source: one Bytewax partition per shard, so more Bytewax processes (``-i/-a``) split the
shards between them. Each GetRecords call becomes one :class:`~dataflows.trades.Chunk` (its
records' data as frames, and whether the shard was caught up: ``MillisBehindLatest`` 0), and an
empty read while caught up is an empty chunk, so the flow can tell a quiet shard from a stalled
one. A partition's snapshot is the sequence number of the last record it emitted; a resumed
partition reads ``AFTER_SEQUENCE_NUMBER`` it, so recovery replays at most one epoch
(at-least-once, which the fold's state and the idempotent sinks absorb). Shards are listed at start; after
a reshard, restart the flow to pick up the children.

Sink: records are ``(partition key, data)``; batches go out in PutRecords calls of at most 500
records / 5 MiB, and records the service failed (throttling) are retried with backoff until
``max_attempts``, after which the batch raises: the task crashes and restarts rather than
silently dropping ticks.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final, Literal

from botocore.exceptions import ClientError
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from core.aws import client
from dataflows.trades import Chunk, now_ms

if TYPE_CHECKING:
    from mypy_boto3_kinesis import KinesisClient
    from mypy_boto3_kinesis.type_defs import PutRecordsRequestEntryTypeDef

log = logging.getLogger(__name__)
StartPosition = Literal["LATEST", "TRIM_HORIZON"]
Record = tuple[str, bytes]
"""(partition key, data)."""
MAX_RECORDS: Final = 500
MAX_REQUEST_BYTES: Final = 5 * 1024 * 1024
MAX_RECORD_BYTES: Final = 1024 * 1024
_THROTTLED: Final = frozenset(
    {"ProvisionedThroughputExceededException", "LimitExceededException", "ThrottlingException"}
)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


# -- source -----------------------------------------------------------------------------------
class _ShardPartition(StatefulSourcePartition[Chunk, str | None]):
    def __init__(
        self,
        kinesis: KinesisClient,
        stream: str,
        shard: str,
        last_sequence: str | None,
        start: StartPosition,
        poll: dt.timedelta,
        limit: int,
        stop_at_end: bool,
    ) -> None:
        self._k = kinesis
        self._stream = stream
        self._shard = shard
        self._last = last_sequence
        self._start = start
        self._poll = poll
        self._limit = limit
        self._stop_at_end = stop_at_end
        self._iterator: str | None = self._new_iterator()
        self._awake: dt.datetime | None = None
        self._failures = 0

    def _new_iterator(self) -> str:
        if self._last is not None:
            resp = self._k.get_shard_iterator(
                StreamName=self._stream,
                ShardId=self._shard,
                ShardIteratorType="AFTER_SEQUENCE_NUMBER",
                StartingSequenceNumber=self._last,
            )
        else:
            resp = self._k.get_shard_iterator(
                StreamName=self._stream, ShardId=self._shard, ShardIteratorType=self._start
            )
        return resp["ShardIterator"]

    def next_batch(self) -> list[Chunk]:
        if self._iterator is None:
            raise StopIteration  # the shard was closed by a reshard and is fully read
        try:
            resp = self._k.get_records(ShardIterator=self._iterator, Limit=self._limit)
        except ClientError as exc:
            code = _code(exc)
            if code == "ExpiredIteratorException":
                self._iterator = self._new_iterator()
                return []
            if code in _THROTTLED:
                self._failures += 1
                wait = min(10.0, 0.2 * 2**self._failures) * (0.5 + random.random())
                self._awake = _now() + dt.timedelta(seconds=wait)
                log.warning("kinesis %s/%s throttled; next read in %.1fs", *self._where(), wait)
                return []
            raise
        self._failures = 0
        records = resp.get("Records", [])
        self._iterator = resp.get("NextShardIterator")
        behind = int(resp.get("MillisBehindLatest", 0) or 0)
        if records:
            self._last = records[-1]["SequenceNumber"]
        caught_up = not records and behind == 0
        if caught_up and self._stop_at_end:
            self._iterator = None
        # 5 reads/s/shard: poll fast only while behind, else every `poll`.
        pause = dt.timedelta(milliseconds=200) if behind > 0 else self._poll
        self._awake = _now() + pause
        frames: list[str | bytes] = [r["Data"] for r in records]
        return [Chunk(self._shard, frames, now_ms(), caught_up=behind == 0)]

    def next_awake(self) -> dt.datetime | None:
        return self._awake

    def snapshot(self) -> str | None:
        return self._last

    def _where(self) -> tuple[str, str]:
        return self._stream, self._shard


class KinesisSource(FixedPartitionedSource[Chunk, str | None]):
    """Record data of every shard of ``stream`` in chunks; one partition per shard.

    ``start`` applies when a shard has no checkpoint. ``stop_at_end`` ends each partition once
    it has read everything (a drain, for tests and catch-up runs); otherwise it follows forever.
    """

    def __init__(
        self,
        stream: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        start: StartPosition = "LATEST",
        poll: dt.timedelta = dt.timedelta(milliseconds=500),
        limit: int = 10_000,
        stop_at_end: bool = False,
    ) -> None:
        self.stream = stream
        self.endpoint_url = endpoint_url
        self.region = region
        self.start = start
        self.poll = poll
        self.limit = limit
        self.stop_at_end = stop_at_end

    def _client(self) -> KinesisClient:
        k: KinesisClient = client("kinesis", endpoint_url=self.endpoint_url, region=self.region)
        return k

    def list_parts(self) -> list[str]:
        """Shard ids of the stream (every worker can read every shard)."""
        k = self._client()
        shards: list[str] = []
        kwargs: dict[str, Any] = {"StreamName": self.stream}
        while True:
            resp = k.list_shards(**kwargs)
            shards.extend(s["ShardId"] for s in resp["Shards"])
            token = resp.get("NextToken")
            if not token:
                return shards
            kwargs = {"NextToken": token}

    def build_part(
        self, step_id: str, for_part: str, resume_state: str | None
    ) -> StatefulSourcePartition[Chunk, str | None]:
        """Read shard ``for_part`` after its checkpoint, or from ``start``."""
        return _ShardPartition(
            self._client(),
            self.stream,
            for_part,
            resume_state,
            self.start,
            self.poll,
            self.limit,
            self.stop_at_end,
        )


# -- sink -------------------------------------------------------------------------------------
def request_chunks(records: list[Record]) -> Iterator[list[Record]]:
    """Split records into PutRecords requests within the count and size limits."""
    chunk: list[Record] = []
    size = 0
    for key, data in records:
        n = len(key.encode()) + len(data)
        if n > MAX_RECORD_BYTES:
            msg = f"record for {key!r} is {n} bytes; Kinesis takes at most {MAX_RECORD_BYTES}"
            raise ValueError(msg)
        if chunk and (len(chunk) == MAX_RECORDS or size + n > MAX_REQUEST_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append((key, data))
        size += n
    if chunk:
        yield chunk


class KinesisPutError(RuntimeError):
    """Records still failed after every retry."""


class _PutPartition(StatelessSinkPartition[Record]):
    def __init__(self, kinesis: KinesisClient, stream: str, max_attempts: int, base: float):
        self._k = kinesis
        self._stream = stream
        self._max_attempts = max_attempts
        self._base = base

    def _put(self, records: list[Record]) -> None:
        pending = records
        for attempt in range(self._max_attempts):
            entries: list[PutRecordsRequestEntryTypeDef] = [
                {"PartitionKey": k, "Data": d} for k, d in pending
            ]
            try:
                resp = self._k.put_records(StreamName=self._stream, Records=entries)
            except ClientError as exc:
                if _code(exc) not in _THROTTLED:
                    raise
                failed = pending
            else:
                failed = [
                    rec
                    for rec, res in zip(pending, resp["Records"], strict=True)
                    if res.get("ErrorCode")
                ]
            if not failed:
                return
            pending = failed
            wait = min(5.0, self._base * 2**attempt) * (0.5 + random.random())
            log.warning(
                "kinesis %s: %d of %d records failed; retrying in %.2fs",
                self._stream,
                len(failed),
                len(entries),
                wait,
            )
            time.sleep(wait)
        msg = f"{len(pending)} records to {self._stream} failed after {self._max_attempts} attempts"
        raise KinesisPutError(msg)

    def write_batch(self, items: list[Record]) -> None:
        for chunk in request_chunks(items):
            self._put(chunk)


class KinesisSink(DynamicSink[Record]):
    """PutRecords ``(partition key, data)`` items into ``stream``, retrying failed records."""

    def __init__(
        self,
        stream: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        max_attempts: int = 8,
        backoff_base: float = 0.1,
    ) -> None:
        self.stream = stream
        self.endpoint_url = endpoint_url
        self.region = region
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base

    def build(
        self, step_id: str, worker_index: int, worker_count: int
    ) -> StatelessSinkPartition[Record]:
        """One client per worker."""
        k: KinesisClient = client("kinesis", endpoint_url=self.endpoint_url, region=self.region)
        return _PutPartition(k, self.stream, self.max_attempts, self.backoff_base)
