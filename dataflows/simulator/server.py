"""The simulator's HTTP and WebSocket server (aiohttp), in-process or standalone.

``SimulatorServer(market)`` runs the app on its own event loop in a background thread, so a
test or the demo can point the real ``polygon-api-client`` at ``.rest_url`` and ``.ws_feed``
and still drive faults and read statistics directly. ``/_sim/*`` is the control API (no key
needed): faults, stats, the replay clock. Everything else needs an API key, as on Polygon.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, Final, Self

from aiohttp import web

from dataflows.simulator import rest
from dataflows.simulator.actions import CorporateActions
from dataflows.simulator.clock import ReplayClock
from dataflows.simulator.faults import Faults, FaultState, Stats
from dataflows.simulator.market import Market
from dataflows.simulator.ws import Feed

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_JSON: Final = "application/json"
_RATE_LIMITED: Final = (
    "You've exceeded the maximum requests per minute, please wait or upgrade your subscription "
    "to continue. https://polygon.io/pricing"
)


class Simulation:
    """What the app serves: the market, the replay clock, faults, stats and caches."""

    def __init__(
        self,
        market: Market,
        *,
        api_key: str | None = None,
        faults: Faults | None = None,
        speed: float = 1.0,
        replay_day: dt.date | None = None,
        replay_offset: float = 0.0,
        ws_interval: float = 0.1,
        max_connections: int = 1,
        max_events: int = 1000,
    ) -> None:
        self.market = market
        self.api_key = api_key
        self.state = FaultState(faults)
        self.stats = Stats()
        self.clock = ReplayClock(market, replay_day, replay_offset, speed)
        self.cache = rest.GroupedCache()
        self.actions = CorporateActions(market)
        self.action_edits: dict[str, dict[str, Any] | None] = {}
        """Changed (field overrides) or withdrawn (None) corporate actions, by id."""
        self.feed = Feed(
            market,
            self.clock,
            self.state,
            self.stats,
            api_key=api_key,
            interval=ws_interval,
            max_connections=max_connections,
            max_events=max_events,
        )

    def bad_rows(self) -> dict[dt.date, tuple[str, ...]]:
        """The market's malformed rows merged with those set as faults."""
        merged = dict(self.market.bad_rows)
        for day, kinds in self.state.bad_rows().items():
            merged[day] = tuple(dict.fromkeys(merged.get(day, ()) + kinds))
        return merged

    def set_faults(self, **changes: Any) -> Faults:
        """Change fault settings (see :class:`Faults`); ``reset=True`` starts from defaults."""
        if changes.pop("reset", False):
            self.state.set(Faults())
        faults = self.state.update(**changes)
        self.cache.clear()
        return faults

    def edit_actions(self, edits: dict[str, dict[str, Any] | None], *, reset: bool = False) -> None:
        """Change (a dict of field overrides) or withdraw (None) corporate actions by id."""
        if reset:
            self.action_edits.clear()
        for key, change in edits.items():
            if change is not None and not isinstance(change, dict):
                msg = f"an edit of {key!r} must be an object of fields, or null to withdraw"
                raise TypeError(msg)
            self.action_edits[str(key)] = change

    def set_clock(
        self, day: dt.date | None = None, offset: float | None = None, speed: float | None = None
    ) -> None:
        """Restart the replay clock (the feed sends nothing for the skipped time)."""
        self.clock.set(day=day, offset=offset, speed=speed)
        self.feed.restart()


def _reply(r: rest.Reply) -> web.Response:
    return web.Response(body=r.body, status=r.status, content_type=_JSON, headers=r.headers)


def _key_of(request: web.Request) -> str | None:
    key = request.query.get("apiKey")
    if key:
        return key
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return None


def build_app(sim: Simulation) -> web.Application:
    """The aiohttp application serving ``sim``."""

    @web.middleware
    async def polygon(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/_sim/") or request.path == "/stocks":
            return await handler(request)
        route = request.match_info.route.name or "unknown"
        response = await _guarded(request, handler)
        sim.stats.request(route, request.path, response.status)
        return response

    async def _guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
        key = _key_of(request)
        if key is None:
            return _reply(rest.error(401, "API Key was not provided"))
        if sim.api_key is not None and key != sim.api_key:
            return _reply(rest.error(401, "Unknown API Key"))
        verdict = sim.state.verdict(request.path)
        if verdict.delay > 0:
            await asyncio.sleep(verdict.delay)
        if verdict.status == 429:
            r = rest.error(429, _RATE_LIMITED)
            return web.Response(
                body=r.body,
                status=429,
                content_type=_JSON,
                headers={"Retry-After": str(verdict.retry_after)},
            )
        if verdict.status != 200:
            return _reply(rest.error(verdict.status, "Internal Server Error (simulated)"))
        try:
            return await handler(request)
        except rest.BadRequest as exc:
            return _reply(rest.error(400, str(exc)))
        except web.HTTPNotFound:
            return _reply(rest.error(404, "Not found"))

    def base(request: web.Request) -> str:
        return f"{request.scheme}://{request.host}"

    async def grouped(request: web.Request) -> web.StreamResponse:
        m = request.match_info
        return _reply(
            rest.grouped_daily(
                sim.market,
                m["locale"],
                m["market"],
                m["date"],
                request.query,
                sim.bad_rows(),
                sim.cache,
                withheld=m["date"] in sim.state.faults.empty_days,
            )
        )

    async def aggs(request: web.Request) -> web.StreamResponse:
        m = request.match_info
        return _reply(
            rest.range_aggs(
                sim.market,
                base(request),
                m["ticker"],
                m["multiplier"],
                m["timespan"],
                m["from"],
                m["to"],
                request.query,
                sim.bad_rows(),
            )
        )

    async def tickers(request: web.Request) -> web.StreamResponse:
        return _reply(rest.tickers(sim.market, base(request), request.query))

    async def details(request: web.Request) -> web.StreamResponse:
        return _reply(rest.ticker_details(sim.market, request.match_info["ticker"], request.query))

    async def splits(request: web.Request) -> web.StreamResponse:
        return _reply(rest.splits(sim.market, base(request), request.query))

    async def stock_splits(request: web.Request) -> web.StreamResponse:
        return _reply(
            rest.stock_splits(sim.actions, base(request), request.query, sim.action_edits)
        )

    async def stock_dividends(request: web.Request) -> web.StreamResponse:
        return _reply(
            rest.stock_dividends(sim.actions, base(request), request.query, sim.action_edits)
        )

    async def post_actions(request: web.Request) -> web.StreamResponse:
        try:
            body = dict(await request.json())
            sim.edit_actions(body.get("edits") or {}, reset=bool(body.get("reset")))
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"edits": sim.action_edits})

    async def conditions(request: web.Request) -> web.StreamResponse:
        return _reply(rest.conditions(base(request), request.query))

    async def status(request: web.Request) -> web.StreamResponse:
        pos = sim.clock.position()
        return _reply(rest.market_status(pos.now_ms, pos.session is not None))

    async def not_found(request: web.Request) -> web.StreamResponse:
        return _reply(rest.error(404, "Not found"))

    # -- control API ------------------------------------------------------------------------
    async def get_faults(request: web.Request) -> web.StreamResponse:
        return web.json_response(sim.state.faults.to_json())

    async def post_faults(request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
            faults = sim.set_faults(**dict(body))
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(faults.to_json())

    async def get_stats(request: web.Request) -> web.StreamResponse:
        return web.json_response(sim.stats.snapshot())

    async def post_reset(request: web.Request) -> web.StreamResponse:
        sim.stats.reset()
        return web.json_response(sim.stats.snapshot())

    async def get_clock(request: web.Request) -> web.StreamResponse:
        return web.json_response(sim.clock.describe())

    async def post_clock(request: web.Request) -> web.StreamResponse:
        try:
            body = dict(await request.json())
            day = dt.date.fromisoformat(body["day"]) if body.get("day") else None
            sim.set_clock(day, body.get("offset"), body.get("speed"))
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(sim.clock.describe())

    async def health(request: web.Request) -> web.StreamResponse:
        m = sim.market
        return web.json_response(
            {
                "status": "ok",
                "seed": m.seed,
                "symbols": m.n_symbols,
                "start": m.start.isoformat(),
                "end": m.end.isoformat(),
                "history_start": m.history_start.isoformat(),
            }
        )

    async def pump(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(sim.feed.run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app = web.Application(middlewares=[polygon])
    r = app.router
    r.add_get(
        "/v2/aggs/grouped/locale/{locale}/market/{market}/{date}", grouped, name="grouped_daily"
    )
    r.add_get(
        "/v2/aggs/ticker/{ticker}/range/{multiplier}/{timespan}/{from}/{to}", aggs, name="aggs"
    )
    r.add_get("/v3/reference/tickers", tickers, name="tickers")
    r.add_get("/v3/reference/tickers/{ticker}", details, name="ticker_details")
    r.add_get("/v3/reference/splits", splits, name="splits")
    r.add_get("/stocks/v1/splits", stock_splits, name="stock_splits")
    r.add_get("/stocks/v1/dividends", stock_dividends, name="stock_dividends")
    r.add_get("/v3/reference/conditions", conditions, name="conditions")
    r.add_get("/v1/marketstatus/now", status, name="market_status")
    r.add_get("/stocks", sim.feed.handle, name="websocket")
    r.add_get("/_sim/faults", get_faults)
    r.add_post("/_sim/faults", post_faults)
    r.add_get("/_sim/stats", get_stats)
    r.add_post("/_sim/reset", post_reset)
    r.add_get("/_sim/clock", get_clock)
    r.add_post("/_sim/clock", post_clock)
    r.add_get("/_sim/health", health)
    r.add_post("/_sim/actions", post_actions)
    r.add_route("*", "/{tail:.*}", not_found, name="unknown")
    app.cleanup_ctx.append(pump)
    return app


class SimulatorServer:
    """Run the simulator on its own event loop in a daemon thread (a context manager).

    ``port=0`` picks a free port. Keyword options are those of :class:`Simulation`
    (``api_key``, ``faults``, ``speed``, ``replay_day``, ``ws_interval``, ...).
    """

    def __init__(
        self, market: Market, host: str = "127.0.0.1", port: int = 0, **options: Any
    ) -> None:
        self.market = market
        self.host = host
        self.port = port
        self.sim = Simulation(market, **options)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def rest_url(self) -> str:
        """REST base URL without a trailing slash, e.g. ``http://127.0.0.1:8010``."""
        return f"http://{self.host}:{self.port}"

    @property
    def ws_feed(self) -> str:
        """``host:port`` for ``WebSocketClient(feed=..., secure=False)``."""
        return f"{self.host}:{self.port}"

    def start(self) -> Self:
        """Start serving; returns when the port is bound."""
        self._thread = threading.Thread(target=self._run, name="polygon-simulator", daemon=True)
        self._thread.start()
        self._ready.wait(60)
        if self._error is not None:
            msg = "simulator failed to start"
            raise RuntimeError(msg) from self._error
        if not self._ready.is_set():
            msg = "simulator did not start within 60 s"
            raise TimeoutError(msg)
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        runner = web.AppRunner(build_app(self.sim), access_log=None, handle_signals=False)
        try:
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
            loop.run_until_complete(site.start())
            self.port = int(runner.addresses[0][1])
        except BaseException as exc:  # reported to start() in the caller's thread
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(runner.cleanup())
            loop.close()

    def stop(self) -> None:
        """Stop serving and join the thread."""
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- control, callable from any thread ------------------------------------------------
    def set_faults(self, **changes: Any) -> Faults:
        """Change fault settings at runtime (see :class:`Faults`; ``reset=True`` clears all)."""
        return self.sim.set_faults(**changes)

    @property
    def faults(self) -> Faults:
        """The current fault settings."""
        return self.sim.state.faults

    def edit_actions(
        self, edits: dict[str, dict[str, Any] | None] | None = None, *, reset: bool = False
    ) -> None:
        """Change or withdraw corporate actions by id (see :meth:`Simulation.edit_actions`)."""
        self.sim.edit_actions(edits or {}, reset=reset)

    def stats(self) -> dict[str, Any]:
        """Request counts by route, path and status, and WebSocket counters."""
        return self.sim.stats.snapshot()

    def reset_stats(self) -> None:
        """Zero the statistics."""
        self.sim.stats.reset()

    def set_clock(
        self, day: dt.date | None = None, offset: float | None = None, speed: float | None = None
    ) -> None:
        """Restart the WebSocket replay at ``day``'s open plus ``offset`` s, at ``speed``x."""
        self.sim.set_clock(day, offset, speed)
