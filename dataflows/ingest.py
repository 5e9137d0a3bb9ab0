"""The ws-ingest task: Polygon WebSocket -> Kinesis stream (default ``ticks``).

``python -m dataflows.ingest --help``. Each WebSocket frame becomes one Kinesis record per
symbol it mentions, partition key = symbol, data = the JSON array of that symbol's raw events
(Polygon's own shape). Grouping keeps a symbol's ticks in order on one shard and cuts the
record count (and cost) by the frame's fan-in; raw events keep everything the live flow needs
to quarantine bad ones. A frame that is not JSON is forwarded whole under ``_malformed`` so
nothing is dropped here: the live flow is the one place that rejects.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Final

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import Sink
from bytewax.run import cli_main

from core.secrets import install_redaction
from core.settings import LiveSettings
from dataflows.connectors.kinesis import MAX_RECORD_BYTES, KinesisSink, Record
from dataflows.connectors.websocket import PolygonWebSocketSource, parse_symbols, ws_config

log = logging.getLogger(__name__)
DEFAULT_STREAM: Final = "ticks"
MALFORMED: Final = "_malformed"
UNKNOWN: Final = "_unknown"
_SEP: Final = (",", ":")


def _key(ev: Any) -> str:
    sym = ev.get("sym") if isinstance(ev, dict) else None
    return sym if isinstance(sym, str) and 0 < len(sym) <= 256 else UNKNOWN


def _pack(key: str, events: list[Any]) -> list[Record]:
    """One record of ``events``, halved until each record fits Kinesis's 1 MiB limit."""
    data = json.dumps(events, separators=_SEP).encode()
    if len(data) + len(key) <= MAX_RECORD_BYTES or len(events) == 1:
        return [(key, data)]
    mid = len(events) // 2
    return _pack(key, events[:mid]) + _pack(key, events[mid:])


def frame_records(frame: str | bytes) -> list[Record]:
    """Kinesis records of one WebSocket frame, one per symbol, in first-seen order."""
    try:
        doc = json.loads(frame)
    except (ValueError, UnicodeDecodeError):
        data = frame.encode() if isinstance(frame, str) else frame
        return [(MALFORMED, data)]
    events = doc if isinstance(doc, list) else [doc]
    groups: dict[str, list[Any]] = defaultdict(list)
    for ev in events:
        if isinstance(ev, dict) and ev.get("ev") == "status":
            continue
        groups[_key(ev)].append(ev)
    return [rec for key, evs in groups.items() for rec in _pack(key, evs)]


def build_ingest_flow(source: Source[str | bytes], sink: Sink[Record]) -> Dataflow:
    """Frames -> per-symbol records -> Kinesis."""
    flow = Dataflow("ingest")
    frames = op.input("websocket", flow, source)
    records = op.flat_map("records", frames, frame_records)
    op.output("kinesis", records, sink)
    return flow


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options; defaults come from the environment (LiveSettings)."""
    p = argparse.ArgumentParser(
        prog="python -m dataflows.ingest",
        description="Forward Polygon's WebSocket trades (T.*) to a Kinesis stream, partition "
        "key = symbol. Key and URL come from POLYGON_API_KEY / POLYGON_SECRET_ID and "
        "POLYGON_WS_URL (the simulator when no key); AWS_ENDPOINT_URL for LocalStack or moto.",
    )
    p.add_argument("--stream", help=f"Kinesis stream (default KINESIS_STREAM or {DEFAULT_STREAM})")
    p.add_argument("--symbols", help="comma-separated symbols or * (default LIVE_SYMBOLS)")
    p.add_argument(
        "--duration", type=float, default=0.0, help="stop after this many seconds (0: run forever)"
    )
    p.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ingest task until interrupted (or for ``--duration`` seconds)."""
    args = parse(argv)
    install_redaction()  # the Polygon key must never reach a log
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s"
    )
    settings = LiveSettings()
    cfg = ws_config(settings)
    if args.symbols:
        cfg = type(cfg)(cfg.url, cfg.key, parse_symbols(args.symbols))
    stream = args.stream or settings.kinesis_stream or DEFAULT_STREAM
    stop = threading.Event()
    if args.duration > 0:
        timer = threading.Timer(args.duration, stop.set)
        timer.daemon = True
        timer.start()
    sink = KinesisSink(
        stream, endpoint_url=settings.aws_endpoint_url, region=settings.aws_default_region
    )
    log.info("ingest: %s -> kinesis stream %s", cfg.url, stream)
    flow = build_ingest_flow(PolygonWebSocketSource(cfg, stop=stop), sink)
    cli_main(flow)  # type: ignore[no-untyped-call]
    return 0


if __name__ == "__main__":
    sys.exit(main())
