"""Replay an archived day of trades through the live flow's own operators.

``python -m bytewax.run dataflows.replay_trades:flow`` reads ``bronze/trades/date=D/`` for the
session in ``REPLAY_TRADES_DATE`` (default: the newest archived one) and folds it with the same
decoder, condition rules and minute fold as the live flow (:func:`dataflows.operators.minute_streams`),
writing final minute bars to bronze like the live run and malformed or too-late trades to
``quarantine/replay_trades/``. So a bar can be audited, or recomputed after a fix, long after
Kinesis has forgotten its trades.

Files are read in key order (when each flush's last trade was received) and each file's trades
read by read (the trades received together, then by SIP time), so the fold takes the same
steps and a trade is late, or too late, as it was live; a trade archived twice counts once (the
fold's (symbol, exchange, id) rule). The final minute bars (the last revision of each minute)
equal the live run's; revisions may differ, since arrival order inside a flush is not kept.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any, Final

import bytewax.operators as op
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import Sink

from core import layout
from core.conditions import ConditionRules, fallback
from core.lake import Lake
from core.settings import LiveSettings
from dataflows.minute_fold import MinuteBar
from dataflows.operators import minute_streams
from dataflows.trades import Chunk, Reject

PART: Final = "replay"


def archived_sessions(lake: Lake) -> list[dt.date]:
    """Sessions with archived trades."""
    days = (layout.minute_session(d) for d in lake.list_dirs(layout.TRADES))
    return sorted(d for d in days if d is not None)


def archive_keys(lake: Lake, day: dt.date) -> list[str]:
    """The session's archive files, in key (arrival) order."""
    entries = lake.list(layout.trades_dir(day) + "/", suffix=".parquet")
    return sorted(e.key for e in entries if e.key.rsplit("/", 1)[-1].startswith("part-"))


def events(table: pa.Table) -> list[dict[str, Any]]:
    """Archived trades as the feed's ``T`` events, in the order they were received."""
    t = table.sort_by(
        [("received_at", "ascending"), ("sip_timestamp", "ascending"), ("sequence", "ascending")]
    )
    ms = pc.divide(pc.cast(t["sip_timestamp"], pa.int64()), 1_000_000).to_pylist()
    out = []
    cols = zip(
        t["symbol"].to_pylist(), ms, t["price"].to_pylist(), t["size"].to_pylist(),
        t["exchange"].to_pylist(), t["id"].to_pylist(), t["sequence"].to_pylist(),
        t["tape"].to_pylist(), t["conditions"].to_pylist(), strict=True,
    )  # fmt: skip
    for sym, when, p, s, x, i, q, z, c in cols:
        ev: dict[str, Any] = {"ev": "T", "sym": sym, "p": p, "s": s, "t": when}
        for key, value in (("x", x), ("i", i), ("q", q), ("z", z)):
            if value is not None:
                ev[key] = value
        if c:
            ev["c"] = c
        out.append(ev)
    return out


class _ArchivePartition(StatefulSourcePartition[Chunk, int]):
    """Reads the day's files one at a time; its state is the next file's index."""

    def __init__(self, lake: Lake, keys: list[str], start: int) -> None:
        self._lake = lake
        self._keys = keys
        self._next = start
        self._pending: Iterator[Chunk] = iter(())

    def _chunks(self, key: str) -> Iterator[Chunk]:
        """One chunk per read of the live flow (trades received together), as it folded them."""
        table = self._lake.read_table(key)
        received = pc.cast(table["received_at"], pa.int64()).to_numpy() // 1000
        evs = events(table)
        reads = np.sort(received, kind="stable")
        cuts = np.flatnonzero(np.diff(reads)) + 1
        for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(evs)], strict=True):
            yield Chunk(PART, [json.dumps(evs[lo:hi])], int(reads[lo]))

    def next_batch(self) -> list[Chunk]:
        for chunk in self._pending:
            return [chunk]
        if self._next >= len(self._keys):
            raise StopIteration
        self._pending = self._chunks(self._keys[self._next])
        self._next += 1
        return []

    def snapshot(self) -> int:
        # a file half fed is fed again whole after a resume: the fold counts its trades once
        return max(0, self._next - 1)


class TradesArchiveSource(FixedPartitionedSource[Chunk, int]):
    """One partition over the archived trades of one session."""

    def __init__(self, lake: Lake, day: dt.date) -> None:
        self.lake = lake
        self.day = day

    def list_parts(self) -> list[str]:
        """One partition: the order of the files matters."""
        return [PART]

    def build_part(
        self, step_id: str, for_part: str, resume_state: int | None
    ) -> StatefulSourcePartition[Chunk, int]:
        """A reader from the first file, or the one a snapshot was taken in."""
        return _ArchivePartition(self.lake, archive_keys(self.lake, self.day), resume_state or 0)


def build_replay_trades_flow(
    source: FixedPartitionedSource[Chunk, int],
    *,
    bars: Sink[tuple[str, list[MinuteBar]]],
    quarantine: Sink[Reject],
    rules: ConditionRules | None = None,
    lateness: dt.timedelta = dt.timedelta(seconds=5),
    horizon: dt.timedelta = dt.timedelta(minutes=15),
) -> Dataflow:
    """The live flow's decode and fold over archived trades."""
    flow = Dataflow("replay_trades")
    chunks = op.input("input", flow, source)
    streams = minute_streams(
        "minute",
        chunks,
        rules or fallback(),
        lateness_ms=int(lateness / dt.timedelta(milliseconds=1)),
        horizon_ms=int(horizon / dt.timedelta(milliseconds=1)),
    )
    op.output("lake", streams.final, bars)
    op.output("quarantine", streams.rejects, quarantine)
    return flow


def flow_from_settings(settings: LiveSettings | None = None) -> Dataflow:
    """The replay of ``REPLAY_TRADES_DATE`` (or the newest archived session) into the lake."""
    from dataflows.connectors.conditions import load_rules
    from dataflows.connectors.minute_sink import MinuteBarSink
    from dataflows.connectors.quarantine_sink import QuarantineSink

    s = settings or LiveSettings()
    lake = Lake(s.lake_url, endpoint_url=s.aws_endpoint_url, region=s.aws_default_region)
    day = s.replay_trades_date
    if day is None:
        held = archived_sessions(lake)
        if not held:
            msg = f"no archived trades under {lake.uri(layout.TRADES)}"
            raise SystemExit(msg)
        day = held[-1]
    return build_replay_trades_flow(
        TradesArchiveSource(lake, day),
        bars=MinuteBarSink(lake, flush_after=s.live_flush_s),
        quarantine=QuarantineSink(lake, "replay_trades"),
        rules=load_rules(None, lake),
        lateness=dt.timedelta(seconds=s.live_lateness_s),
        horizon=dt.timedelta(seconds=s.live_revision_horizon_s),
    )


def __getattr__(name: str) -> Any:
    """Build ``flow`` lazily, so importing this module reads no settings and opens nothing."""
    if name == "flow":
        built = flow_from_settings()
        globals()["flow"] = built
        return built
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
