"""The trades archive and its replay: a simulated stretch of a day, live, then from the archive."""

from __future__ import annotations

import datetime as dt
import json
import random
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from bytewax.testing import TestingSink, TestingSource, run_main

from core import calendar, layout
from core.conditions import fallback
from core.lake import Lake
from core.schemas import TRADES
from dataflows.connectors.trades_sink import ARCHIVE_KEY, TradesArchiveSink
from dataflows.live import build_live_flow
from dataflows.minute_fold import FoldOut, MinuteBar
from dataflows.replay_trades import TradesArchiveSource, build_replay_trades_flow
from dataflows.simulator import Market
from dataflows.simulator.ws import resent
from dataflows.trades import Chunk, Decoder, Reject

pytestmark = pytest.mark.unit
DAY = dt.date(2025, 1, 3)


def latest(finals: list[tuple[str, list[MinuteBar]]]) -> dict[tuple[str, int], MinuteBar]:
    out: dict[tuple[str, int], MinuteBar] = {}
    for _, bars in finals:
        for b in bars:
            if (k := (b.symbol, b.start)) not in out or b.revision >= out[k].revision:
                out[k] = b
    return out


def values(b: MinuteBar) -> tuple[object, ...]:
    return (b.open, b.high, b.low, b.close, b.volume, b.vwap, b.trades, b.partial)


def live_events(market: Market) -> list[dict[str, object]]:
    opened = calendar.session_open(DAY)
    trades = market.trades(DAY, opened, opened + dt.timedelta(minutes=40))
    events = trades.to_events()
    again = trades.take(resent(trades)).to_events()
    rng = random.Random(2)
    for ev in again:  # resent a little later, as the feed does
        events.insert(min(len(events), events.index(ev) + rng.randrange(1, 300)), dict(ev))
    # a few trades arrive a minute late: they revise their closed minute
    for k in rng.sample(range(len(events) // 2), 5):
        events.append(events.pop(k))
    return events


def test_archive_holds_every_trade_and_its_replay_gives_the_live_bars(tmp_path: Path) -> None:
    lake = Lake((tmp_path / "lake").as_uri())
    market = Market(seed=11, n_symbols=6, start=dt.date(2025, 1, 2), end=dt.date(2025, 1, 6))
    events = live_events(market)
    frames: list[str | bytes] = [
        json.dumps(events[i : i + 200]) for i in range(0, len(events), 200)
    ]
    chunks, newest = [], 0
    for i in range(0, len(frames), 5):  # read_at: the wall clock, just after the newest trade
        newest = max([newest, *(int(e["t"]) for e in events[i * 200 : (i + 5) * 200])])  # type: ignore[call-overload]
        chunks.append(Chunk("p0", frames[i : i + 5], newest + 50 + i))
    live_bars: list[tuple[str, list[MinuteBar]]] = []
    outs: list[FoldOut] = []
    rejects: list[Reject] = []
    run_main(build_live_flow(  # type: ignore[no-untyped-call]
        TestingSource(chunks), bars=TestingSink(live_bars), live=TestingSink(outs),
        quarantine=TestingSink(rejects), trades=TradesArchiveSink(lake, max_trades=500),
    ))  # fmt: skip
    assert outs[-1].counters["late"] > 0 and outs[-1].counters["duplicates"] > 0
    keys = [e.key for e in lake.list(layout.trades_dir(DAY))]
    assert len(keys) > 3 and keys == sorted(keys)
    total = 0
    for key in keys:
        f = pq.ParquetFile(lake.path(key), filesystem=lake.fs)
        assert f.metadata.row_group(0).column(0).compression == "ZSTD"
        t = f.read()
        assert t.schema == TRADES
        assert t.equals(t.sort_by([("symbol", "ascending"), ("sip_timestamp", "ascending")]))
        total += t.num_rows
    assert total == len(events)  # every trade as received, resent ones included
    first = lake.read_table(keys[0])
    row = first.slice(0, 1).to_pylist()[0]
    sent = next(e for e in events if e["i"] == row["id"] and e["sym"] == row["symbol"])
    assert row["price"] == sent["p"] and row["conditions"] == (sent.get("c") or [])
    assert int(pc.cast(first["sip_timestamp"], "int64")[0].as_py()) == int(sent["t"]) * 1_000_000  # type: ignore[call-overload]

    replayed: list[tuple[str, list[MinuteBar]]] = []
    quarantined: list[Reject] = []
    run_main(build_replay_trades_flow(  # type: ignore[no-untyped-call]
        TradesArchiveSource(lake, DAY), bars=TestingSink(replayed),
        quarantine=TestingSink(quarantined),
    ))  # fmt: skip
    want, got = latest(live_bars), latest(replayed)
    assert set(got) == set(want) and len(want) > 200
    assert [k for k in want if values(got[k]) != values(want[k])] == []

    def late(rs: list[Reject]) -> set[tuple[object, ...]]:
        return {(r.payload["sym"], r.payload["t"], r.payload["i"]) for r in rs}

    assert late(quarantined) == late(rejects)  # too late live, too late replayed


class _StuckLake(Lake):
    """A lake whose writes wait until released: a write still under way at a snapshot."""

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        self.release = threading.Event()

    def write_bytes(self, key: str, data: bytes | pa.Buffer) -> None:
        self.release.wait(30)
        super().write_bytes(key, data)


def _archive_files(lake: Lake) -> dict[str, pa.Table]:
    return {e.key: lake.read_table(e.key) for e in lake.list("bronze/trades/")}


def test_a_snapshot_carries_the_writes_under_way_and_a_resume_writes_them(tmp_path: Path) -> None:
    """The flow does not wait for the lake at a snapshot; a crash right after it loses nothing."""
    market = Market(seed=11, n_symbols=6, start=dt.date(2025, 1, 2), end=dt.date(2025, 1, 6))
    events = live_events(market)[:3000]
    decoder = Decoder(fallback())
    batches = [
        decoder.decode(Chunk("p0", [json.dumps(events[i : i + 500])], 1_700_000_000_000 + i))
        for i in range(0, len(events), 500)
    ]
    stuck = _StuckLake((tmp_path / "stuck").as_uri())
    sink = TradesArchiveSink(stuck)
    part = sink.build_part("archive", ARCHIVE_KEY, None)
    part.write_batch(batches[:2])
    carried = part.snapshot()  # returns at once: the write is stuck
    assert carried is not None and len(carried) == 1
    part.write_batch(batches[2:])
    again = part.snapshot()  # both flushes still under way, one entry each
    assert again is not None and len(again) == 2 and again[0] == carried[0]
    # the process dies here; a new one resumes from the last snapshot
    resumed = Lake((tmp_path / "resumed").as_uri())
    TradesArchiveSink(resumed).build_part("archive", ARCHIVE_KEY, again).close()
    stuck.release.set()
    part.close()
    want, got = _archive_files(stuck), _archive_files(resumed)
    assert sorted(want) == sorted(got) and len(want) == 2  # same files, same keys
    assert all(got[k].equals(want[k]) for k in want)
    assert sum(t.num_rows for t in got.values()) == len(events)
    assert TradesArchiveSink(resumed).build_part("archive", ARCHIVE_KEY, None).snapshot() is None
