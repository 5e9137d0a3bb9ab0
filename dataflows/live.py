"""The live flow: Polygon trades to Redis (latest trade, live bar) and minute bars in the lake.

    raw frames -> parse -+-> ticks, keyed by symbol -+-> live view ---------> Redis
                         |                           +-> 1-minute fold -----> bronze minute parts
                         |                                 | late ticks, invalid bars
                         +-> malformed events ------------+-> quarantine/live/

Run it with ``python -m bytewax.run dataflows.live:flow``. ``flow`` is built on first access
from :class:`core.settings.LiveSettings` (nothing is read at import): with ``KINESIS_STREAM``
it reads the stream's shards (one partition each, so more processes share the shards), else
Polygon's WebSocket (``POLYGON_WS_URL``, or the simulator). Tests build their own flow with
:func:`build_live_flow` and Bytewax's testing source and sinks.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import Sink

from core.lake import Lake
from core.records import Bar, Tick
from core.secrets import install_redaction
from core.settings import LiveSettings
from core.stores.redis import redis_url
from dataflows.connectors.kinesis import KinesisSource
from dataflows.connectors.minute_sink import MinuteBarSink
from dataflows.connectors.quarantine_sink import QuarantineSink
from dataflows.connectors.redis_sink import RedisLiveSink
from dataflows.connectors.websocket import PolygonWebSocketSource, ws_config
from dataflows.operators import (
    LiveUpdate,
    Rejected,
    as_rejected,
    decode_frame,
    is_tick,
    live_step,
    minute_bars,
)
from dataflows.recovery import prepare_recovery

DEFAULT_LATENESS = dt.timedelta(seconds=5)


def _symbol(t: Tick) -> str:
    return t.symbol


def build_live_flow(
    source: Source[str | bytes],
    *,
    bars: Sink[Bar],
    live: Sink[LiveUpdate],
    quarantine: Sink[Rejected],
    lateness: dt.timedelta = DEFAULT_LATENESS,
    flow_id: str = "live",
) -> Dataflow:
    """The live dataflow from raw frames (WebSocket frames or Kinesis records) to three sinks.

    ``bars`` gets closed minute bars, ``live`` one update per tick that changed the live view,
    ``quarantine`` every malformed event, late tick and invalid bar, with its reason.
    """
    flow = Dataflow(flow_id)
    raw = op.input("input", flow, source)
    parsed = op.flat_map("parse", raw, decode_frame)
    split = op.branch("split", parsed, is_tick)
    malformed = op.map("malformed", split.falses, as_rejected)
    ticks = op.key_on("by_symbol", split.trues, _symbol)
    view = op.stateful_flat_map("live_view", ticks, live_step)
    op.output("redis", op.key_rm("view_values", view), live)
    minutes = minute_bars("minute", ticks, lateness)
    op.output("lake", minutes.bars, bars)
    rejected = op.merge("rejected", malformed, minutes.rejected)
    op.output("quarantine", rejected, quarantine)
    return flow


def flow_from_settings(settings: LiveSettings | None = None) -> Dataflow:
    """The production flow: source and sinks chosen by the settings."""
    install_redaction()  # the Polygon key must never reach a log
    prepare_recovery()  # bytewax.run -r DIR: a first start creates the store
    s = settings or LiveSettings()
    source: Source[str | bytes]
    if s.kinesis_stream:
        source = KinesisSource(
            s.kinesis_stream,
            endpoint_url=s.aws_endpoint_url,
            region=s.aws_default_region,
            start=s.kinesis_start,
        )
    else:
        source = PolygonWebSocketSource(ws_config(s))
    lake = Lake(s.lake_url, endpoint_url=s.aws_endpoint_url, region=s.aws_default_region)
    return build_live_flow(
        source,
        bars=MinuteBarSink(lake),
        live=RedisLiveSink(redis_url(s), s.redis_prefix),
        quarantine=QuarantineSink(lake, "live"),
        lateness=dt.timedelta(seconds=s.live_lateness_s),
    )


def __getattr__(name: str) -> Any:
    """Build ``flow`` lazily, so importing this module reads no settings and opens nothing."""
    if name == "flow":
        built = flow_from_settings()
        globals()["flow"] = built
        return built
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
