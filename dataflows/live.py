"""The live flow: Polygon trades to minute bars (lake), bar events and latest trades (Redis).

    source chunks -> decode -> trade batches -> fold per partition (event time) -+-> Redis
                                                                                  +-> bronze minute fragments
                                                                                  +-> live_gaps (Postgres)
                                                                                  +-> bronze/trades/ (archive)
                                                                                  +-> 5m..4h bars (Redis)
                                                                                  +-> bronze daily (provisional)
                                                                                  +-> alerts (Postgres, Redis, SNS)
                                                                                  +-> quarantine/live/

Run it with ``python -m bytewax.run dataflows.live:flow``. ``flow`` is built on first access
from :class:`core.settings.LiveSettings` (nothing is read at import): with ``KINESIS_STREAM``
it reads the stream's shards (one partition each, so more processes share the shards), else
Polygon's WebSocket (``POLYGON_WS_URL``, or the simulator). The trade-condition table is loaded
at start (:mod:`dataflows.connectors.conditions`). Tests build their own flow with
:func:`build_live_flow` and Bytewax's testing source and sinks.
"""

from __future__ import annotations

import datetime as dt
import functools
import gc
from collections.abc import Callable
from typing import Any

import bytewax.operators as op
import pyarrow as pa
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import Sink

from core.alerts import AlertEvent
from core.bronze import BronzeSink
from core.conditions import ConditionRules, fallback
from core.lake import Lake
from core.secrets import install_redaction
from core.settings import LiveSettings
from core.stores.postgres import database_url
from core.stores.redis import redis_url
from dataflows import alert_seed
from dataflows.alerts import FeedConfig, RuleFeed, alert_stream, feed_factory
from dataflows.connectors.alert_sink import AlertSink
from dataflows.connectors.conditions import load_rules
from dataflows.connectors.gap_sink import GapSink
from dataflows.connectors.kinesis import KinesisSource
from dataflows.connectors.minute_sink import MinuteBarSink
from dataflows.connectors.polygon import PolygonConfigError, PolygonGateway
from dataflows.connectors.quarantine_sink import QuarantineSink
from dataflows.connectors.redis_sink import RedisLiveSink
from dataflows.connectors.rollup_sink import RollupRedisSink
from dataflows.connectors.trades_sink import TradesArchiveSink, archive_key
from dataflows.connectors.websocket import PolygonChunkSource, ws_config
from dataflows.minute_fold import FoldOut, Gap, MinuteBar
from dataflows.operators import LiveStreams, minute_streams
from dataflows.recovery import prepare_recovery
from dataflows.rollups import RollupBar, WindowSums, rollup_stream
from dataflows.trades import Chunk, Reject, TradeBatch

DEFAULT_LATENESS = dt.timedelta(seconds=5)
DEFAULT_HORIZON = dt.timedelta(minutes=15)
DEFAULT_SETTLE = dt.timedelta(minutes=60)


def build_live_flow(
    source: Source[Chunk],
    *,
    bars: Sink[tuple[str, list[MinuteBar]]],
    live: Sink[FoldOut],
    quarantine: Sink[Reject],
    gaps: Sink[Gap] | None = None,
    daily: Sink[pa.Table] | None = None,
    trades: Sink[tuple[str, TradeBatch]] | None = None,
    rollups: Sink[list[RollupBar]] | None = None,
    sums: Sink[list[WindowSums]] | None = None,
    alerts: Sink[list[AlertEvent]] | None = None,
    alert_feed: Callable[[], RuleFeed | None] | None = None,
    rules: ConditionRules | None = None,
    lateness: dt.timedelta = DEFAULT_LATENESS,
    horizon: dt.timedelta = DEFAULT_HORIZON,
    settle: dt.timedelta = DEFAULT_SETTLE,
    publish_every: dt.timedelta = dt.timedelta(0),
    flow_id: str = "live",
) -> Dataflow:
    """The live dataflow from source chunks to its sinks.

    ``bars`` gets final minute bars (and revisions), ``live`` every fold result (bar events,
    latest trades, counters), ``quarantine`` every malformed event, invalid bar and trade too
    late to revise its minute, ``gaps`` the spans the flow knows it missed, ``daily`` each
    symbol's provisional daily bar once its session closed and ``settle`` passed (event time),
    ``trades`` the decoded trade batches (for an archive), ``rollups`` the final 5m..4h bars
    (and revisions), ``sums`` the window summaries readers form the forming ones from
    (:mod:`dataflows.rollups`), ``alerts`` the alert events of the rules ``alert_feed`` follows
    (:mod:`dataflows.alerts`). Forming bars and latest trades go to ``live`` at most once per
    ``publish_every`` per partition; final bars never wait.
    """
    flow = Dataflow(flow_id)
    chunks = op.input("input", flow, source)
    streams: LiveStreams = minute_streams(
        "minute",
        chunks,
        rules or fallback(),
        lateness_ms=int(lateness / dt.timedelta(milliseconds=1)),
        horizon_ms=int(horizon / dt.timedelta(milliseconds=1)),
        settle_ms=_ms(settle) if daily is not None else None,
        publish_s=publish_every.total_seconds(),
    )
    op.output("redis", streams.folded, live)
    op.output("lake", streams.final, bars)
    op.output("quarantine", streams.rejects, quarantine)
    if gaps is not None:
        op.output("gaps", streams.gaps, gaps)
    if daily is not None:
        op.output("daily", streams.daily, daily)
    if trades is not None:
        op.output("trades", op.key_on("trades_key", streams.trades, archive_key), trades)
    rolled = None
    if rollups is not None or sums is not None or alerts is not None:
        rolled = rollup_stream("rollup", streams.folded, horizon_ms=_ms(horizon))
    if rollups is not None and rolled is not None:
        op.output("rollups", rolled.bars, rollups)
    if sums is not None and rolled is not None:
        op.output("sums", rolled.sums, sums)
    if alerts is not None:
        feed = alert_feed or _no_feed
        closed = None if rolled is None else rolled.bars
        events = alert_stream("alerts", streams.trades, streams.final, closed, feed)
        op.output("alerts", events, alerts)
    return flow


def _no_feed() -> None:
    return None


def tune_gc() -> None:
    """Fewer, cheaper garbage collections for a long-running flow.

    Every chunk allocates thousands of short-lived objects (parsed events, bars), so the
    default thresholds run a collection every few hundred trades and a full one, which walks
    all the fold's state, every few seconds: a pause of tens of milliseconds on the way to
    Redis. What exists once the flow is built (modules, the condition table) is frozen out of
    collection; the young generation collects after 100,000 allocations instead of 700.
    """
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


def _ms(d: dt.timedelta) -> int:
    return int(d / dt.timedelta(milliseconds=1))


def _rules(s: LiveSettings, lake: Lake) -> ConditionRules:
    try:
        gateway: PolygonGateway | None = PolygonGateway.from_settings(s)
    except PolygonConfigError:
        gateway = None  # no REST configured: the lake's copy or the built-in table
    try:
        return load_rules(gateway, lake)
    finally:
        if gateway is not None:
            gateway.close()


def flow_from_settings(settings: LiveSettings | None = None) -> Dataflow:
    """The production flow: source and sinks chosen by the settings."""
    install_redaction()  # the Polygon key must never reach a log
    prepare_recovery()  # bytewax.run -r DIR: a first start creates the store
    s = settings or LiveSettings()
    source: Source[Chunk]
    if s.kinesis_stream:
        source = KinesisSource(
            s.kinesis_stream,
            endpoint_url=s.aws_endpoint_url,
            region=s.aws_default_region,
            start=s.kinesis_start,
        )
    else:
        source = PolygonChunkSource(ws_config(s))
    lake = Lake(s.lake_url, endpoint_url=s.aws_endpoint_url, region=s.aws_default_region)
    tune_gc()
    return build_live_flow(
        source,
        bars=MinuteBarSink(lake, flush_after=s.live_flush_s),
        live=RedisLiveSink(redis_url(s), s.redis_prefix, ttl_s=s.live_ttl_s),
        quarantine=QuarantineSink(lake, "live"),
        gaps=GapSink(database_url(s)),
        trades=TradesArchiveSink(lake, flush_after=s.trades_flush_s) if s.trades_archive else None,
        rollups=RollupRedisSink[RollupBar](redis_url(s), s.redis_prefix, ttl_s=s.live_ttl_s),
        sums=RollupRedisSink[WindowSums](redis_url(s), s.redis_prefix, ttl_s=s.live_ttl_s),
        daily=BronzeSink(lake),
        alerts=AlertSink(
            database_url(s),
            redis_url(s),
            s.redis_prefix,
            max_per_minute=s.alerts_max_per_minute,
            sns_topic_arn=s.alerts_sns_topic_arn,
            endpoint_url=s.aws_endpoint_url,
            region=s.aws_default_region,
        ),
        alert_feed=feed_factory(
            FeedConfig(database_url(s), redis_url(s), s.redis_prefix, s.alerts_reload_s),
            functools.partial(alert_seed.load, lake, bars=s.alerts_seed_bars),
        ),
        rules=_rules(s, lake),
        lateness=dt.timedelta(seconds=s.live_lateness_s),
        horizon=dt.timedelta(seconds=s.live_revision_horizon_s),
        settle=dt.timedelta(minutes=s.settle_minutes),
        publish_every=dt.timedelta(milliseconds=s.live_publish_ms),
    )


def __getattr__(name: str) -> Any:
    """Build ``flow`` lazily, so importing this module reads no settings and opens nothing."""
    if name == "flow":
        built = flow_from_settings()
        globals()["flow"] = built
        return built
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
