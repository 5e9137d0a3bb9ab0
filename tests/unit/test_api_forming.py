"""Forming 5m..4h bars on ``WS /v1/stream``: the flow publishes window summaries, the API's hub
forms the bars from them and the forming minute bar. Real Redis, the flow's own sinks."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketTestSession

from api.main import create_app
from core import calendar, intraday
from core.settings import ApiSettings
from core.stores.redis import connect
from dataflows.connectors.redis_sink import RedisLiveSink
from dataflows.connectors.rollup_sink import RollupRedisSink
from dataflows.minute_fold import FoldOut, MinuteBar
from dataflows.rollups import Rolled, RollupState
from tests.api_market import HEADERS

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]
OPEN = int(calendar.session_open(dt.date(2024, 11, 27)).timestamp() * 1000)


def minute(k: int, final: bool, close: float = 10.0) -> MinuteBar:
    return MinuteBar(
        symbol="FRM", start=OPEN + k * 60_000, open=10.0 + k, high=12.0 + k, low=9.0,
        close=close, volume=100.0 * (k + 1), vwap=10.5, trades=k + 1, final=final, revision=0,
        partial=False,
    )  # fmt: skip


class Flow:
    """The live flow's two Redis sinks, fed in the flow's order, and its rollup step."""

    def __init__(self, settings: ApiSettings) -> None:
        url = settings.redis_url.get_secret_value()  # type: ignore[union-attr]
        self.live = RedisLiveSink(url, settings.redis_prefix).build("redis", 0, 1)
        self.rollups = RollupRedisSink[Rolled](url, settings.redis_prefix).build("rollups", 0, 1)
        self.state = RollupState(tuple(intraday.INTERVALS), horizon_ms=15 * 60_000)

    def step(self, final: list[MinuteBar], forming: list[MinuteBar], watermark: int) -> None:
        out = FoldOut("p0", 0, forming=forming, final=final, watermark=watermark)
        self.live.write_batch([out])
        rolled = self.state.step(out)
        if rolled:
            self.rollups.write_batch([rolled])

    def close(self) -> None:
        self.live.close()
        self.rollups.close()


def until(ws: WebSocketTestSession, want: Any) -> list[dict[str, Any]]:
    """Messages received up to and including the first for which ``want`` is true."""
    got = []
    while True:
        msg = ws.receive_json()
        got.append(msg)
        if want(msg["data"]):
            return got


def test_sockets_get_forming_and_final_5m_to_4h_bars(settings: ApiSettings) -> None:
    flow = Flow(settings)
    flow.step([minute(0, True)], [minute(1, False)], OPEN + 60_000)
    flow.step([minute(1, True)], [], OPEN + 2 * 60_000)  # stored before the socket came
    app = create_app(settings.model_copy(update={"live_rollup_publish_ms": 0}))
    with (
        TestClient(app) as client,
        client.websocket_connect("/v1/stream?symbols=FRM", headers=HEADERS) as ws,
    ):
        assert ws.receive_json()["type"] == "subscribed"
        flow.step([], [minute(2, False, close=11.0)], OPEN + 2 * 60_000)
        got = until(ws, lambda d: d.get("interval") == "4h")
        assert [m["data"].get("interval") for m in got] == [None, *intraday.INTERVALS]
        assert all(m["type"] == "bar" and m["data"]["final"] is False for m in got)
        five = got[1]["data"]
        assert five["start"] == "2024-11-27T14:30:00+00:00"
        assert five["end"] == "2024-11-27T14:35:00+00:00"
        assert (five["open"], five["high"], five["low"], five["close"]) == (10.0, 14.0, 9.0, 11.0)
        assert (five["volume"], five["trades"], five["minutes"]) == (600.0, 6, 3)
        assert five["vwap"] == 10.5 and five["complete"] is False and five["revision"] == 0

        # the minute closes: its final bar, then the next forming one's windows include it
        flow.step([minute(2, True, close=11.0)], [minute(3, False)], OPEN + 3 * 60_000)
        got = until(ws, lambda d: d.get("interval") == "4h")
        assert got[0]["data"]["final"] is True and "interval" not in got[0]["data"]
        five = next(m["data"] for m in got if m["data"].get("interval") == "5m")
        assert (five["minutes"], five["volume"], five["close"]) == (4, 1000.0, 10.0)

        # the window closes: its final bar, once, with its revision
        flow.step([minute(3, True), minute(4, True)], [minute(5, False)], OPEN + 5 * 60_000)
        got = until(ws, lambda d: d.get("interval") == "5m" and d["final"])
        final = got[-1]["data"]
        assert (final["minutes"], final["revision"], final["complete"]) == (5, 0, True)
        assert not any("windows" in m["data"] for m in got)  # summaries are not relayed
        forming = next(m["data"] for m in got if m["data"].get("interval") == "5m")
        assert forming["final"] is False and forming["minutes"] == 1  # the next window's
        assert forming["start"] == "2024-11-27T14:35:00+00:00"
    flow.close()


@contextlib.contextmanager
def following(settings: ApiSettings, rollup_ms: int) -> Iterator[tuple[Flow, WebSocketTestSession]]:
    """The flow's sinks, and a socket following FRM on an API forming at ``rollup_ms``."""
    flow = Flow(settings)
    app = create_app(settings.model_copy(update={"live_rollup_publish_ms": rollup_ms}))
    with (
        TestClient(app) as client,
        client.websocket_connect("/v1/stream?symbols=FRM", headers=HEADERS) as ws,
    ):
        assert ws.receive_json()["type"] == "subscribed"
        flow.step([], [minute(0, False)], OPEN)
        assert len(until(ws, lambda d: d.get("interval") == "4h")) == 7  # the minute, 5m..4h
        yield flow, ws
    flow.close()


def test_forming_bars_wait_for_their_turn(settings: ApiSettings) -> None:
    """At most one forming 5m..4h bar per symbol and interval per LIVE_ROLLUP_PUBLISH_MS."""
    with following(settings, 60_000) as (flow, ws):
        for k in range(3):
            flow.step([], [minute(0, False, close=20.0 + k)], OPEN)
        seen = [m["data"] for m in until(ws, lambda d: d["close"] == 22.0)]
        ws.send_json({"action": "ping"})
        assert ws.receive_json() == {"type": "pong"}  # a forming bar is sent with its minute's
        assert [d["close"] for d in seen] == [20.0, 21.0, 22.0]  # minute bars only
        assert (
            connect(settings.redis_url.get_secret_value()).exists(  # type: ignore[union-attr]
                f"{settings.redis_prefix}bar:5m:FRM"
            )
            == 0
        )  # no forming 5m..4h documents in Redis


def test_the_newest_forming_minute_is_formed_at_its_turn(settings: ApiSettings) -> None:
    with following(settings, 300) as (flow, ws):
        for k in range(3):
            flow.step([], [minute(0, False, close=20.0 + k)], OPEN)
        got = [m["data"] for m in until(ws, lambda d: d.get("interval") == "4h")]
        formed = [d for d in got if "interval" in d]
        assert len(formed) == 6 and {d["close"] for d in formed} == {22.0}  # the newest only
