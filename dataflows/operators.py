"""The live flow's Bytewax steps: decode chunks, fold them per partition, split the results.

Items are chunks and trade batches (hundreds of trades each), never single trades: Bytewax's
cost per item would otherwise dominate. The fold is :class:`dataflows.minute_fold.MinuteFold`,
one per source partition (keyed by the partition's name), so the watermark is per partition;
its state is snapshotted whole (pickled once per epoch) for recovery.
"""

from __future__ import annotations

import datetime as dt
import pickle
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import bytewax.operators as op
import pyarrow as pa
from bytewax.dataflow import Stream
from bytewax.operators import StatefulLogic

from core.conditions import ConditionRules
from dataflows.day_fold import DayFold, daily_table
from dataflows.minute_fold import FoldOut, Gap, MinuteBar, MinuteFold
from dataflows.pacing import Pace
from dataflows.trades import Chunk, Decoder, Reject, TradeBatch, now_ms

BARS_KEY: Final = "minutes"
"""Key of the final bars' items: the minute sink has one partition."""


class _FoldLogic(StatefulLogic[TradeBatch, FoldOut, bytes]):
    """The fold, publishing forming bars and latest trades at most every ``publish_s``.

    Final bars, revisions, gaps and rejects go out with the batch that caused them; forming
    bars and latest trades wait until ``publish_s`` has passed since the last publication
    (a notification publishes them when no batch comes), so Redis sees a bounded rate of
    writes whatever the trade rate.
    """

    def __init__(self, fold: MinuteFold, publish_s: float) -> None:
        self.fold = fold
        self.pace = Pace(publish_s)

    def on_item(self, value: TradeBatch) -> tuple[Iterable[FoldOut], bool]:
        return [self.fold.step(value, publish=self.pace.ready())], StatefulLogic.RETAIN

    def on_notify(self) -> tuple[Iterable[FoldOut], bool]:
        if not self.fold.waiting() or not self.pace.ready():
            return [], StatefulLogic.RETAIN
        return [self.fold.flush(now_ms())], StatefulLogic.RETAIN

    def notify_at(self) -> dt.datetime | None:
        return self.pace.wake_at(self.fold.waiting())

    def on_eof(self) -> tuple[Iterable[FoldOut], bool]:
        return [self.fold.finish()], StatefulLogic.RETAIN

    def snapshot(self) -> bytes:
        return pickle.dumps(self.fold, protocol=pickle.HIGHEST_PROTOCOL)


@dataclass(frozen=True, slots=True)
class LiveStreams:
    """The streams a live flow offers its sinks (and later steps, such as a trades archive)."""

    trades: Stream[TradeBatch]
    """Deduplication happens in the fold; these are the decoded batches as received."""
    folded: Stream[FoldOut]
    final: Stream[tuple[str, list[MinuteBar]]]
    rejects: Stream[Reject]
    gaps: Stream[Gap]
    daily: Stream[pa.Table]
    """Provisional daily bars (BRONZE_DAILY, ``source=live``) as each session settles."""


def _part(b: TradeBatch) -> str:
    return b.part


def _value(item: tuple[str, FoldOut]) -> FoldOut:
    return item[1]


def _final(out: FoldOut) -> list[tuple[str, list[MinuteBar]]]:
    return [(BARS_KEY, out.final)] if out.final else []


def _rejects(out: FoldOut) -> list[Reject]:
    return out.rejects


def _gaps(out: FoldOut) -> list[Gap]:
    return out.gaps


def _daily(out: FoldOut) -> list[pa.Table]:
    return [daily_table(out.daily)] if out.daily else []


def minute_streams(
    step_id: str,
    chunks: Stream[Chunk],
    rules: ConditionRules,
    *,
    lateness_ms: int,
    horizon_ms: int,
    settle_ms: int | None = None,
    publish_s: float = 0.0,
) -> LiveStreams:
    """Chunks to bar events on event time, one fold per source partition.

    Forming bars and latest trades are published at most every ``publish_s`` per partition
    (0: with every batch).
    """
    decoder = Decoder(rules)
    trades = op.map(f"{step_id}_decode", chunks, decoder.decode)
    keyed = op.key_on(f"{step_id}_by_part", trades, _part)

    def build(resume: bytes | None) -> _FoldLogic:
        if resume is None:
            days = None if settle_ms is None else DayFold(settle_ms, horizon_ms)
            return _FoldLogic(MinuteFold(lateness_ms, horizon_ms, days=days), publish_s)
        fold = pickle.loads(resume)  # noqa: S301  # our own snapshot from the recovery store
        fold.lateness_ms, fold.horizon_ms = lateness_ms, horizon_ms
        return _FoldLogic(fold, publish_s)

    folded = op.map(f"{step_id}_values", op.stateful(f"{step_id}_fold", keyed, build), _value)
    return LiveStreams(
        trades=trades,
        folded=folded,
        final=op.flat_map(f"{step_id}_final", folded, _final),
        rejects=op.flat_map(f"{step_id}_rejects", folded, _rejects),
        gaps=op.flat_map(f"{step_id}_gaps", folded, _gaps),
        daily=op.flat_map(f"{step_id}_daily", folded, _daily),
    )
