"""Where one request's CPU goes: ``python -m benchmarks.profile_api``, the app driven in-process.

The app is built as ``python -m api`` builds it (from the environment: LAKE_URL, DATABASE_URL,
REDIS_URL, API_KEYS, ...) and called as an ASGI application directly, with no socket and no
HTTP parsing, so what is measured is the app's own work per request: dependencies, auth, the
rate limit, the answer cache, encoding and the middleware stack. Each path of ``--paths`` is
asked once to warm the caches, then ``--repeat`` times under cProfile; the mean time per
request and the costliest functions are printed. ``python -m benchmarks.bench_api`` leaves its
path files and data under ``benchmarks/.work/api-bench`` for this.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Message


async def call(app: ASGIApp, path: str, headers: list[tuple[bytes, bytes]]) -> int:
    """One GET of ``path`` through ``app``; its status."""
    raw_path, _, query = path.partition("?")
    scope: dict[str, Any] = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": raw_path, "raw_path": raw_path.encode(),
        "query_string": query.encode(), "root_path": "", "headers": headers,
        "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000), "state": {},
    }  # fmt: skip
    status = 0
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])

    await app(scope, receive, send)
    return status


async def measure(
    app: ASGIApp, paths: list[str], headers: list[tuple[bytes, bytes]], repeat: int, top: int
) -> str:
    """Warm every path once, then profile ``repeat`` passes; the report."""
    for path in paths:
        if (status := await call(app, path, headers)) != 200:
            msg = f"{path} answered {status} while warming"
            raise RuntimeError(msg)
    n = 0
    prof = cProfile.Profile()
    started = time.perf_counter()
    prof.enable()
    for _ in range(repeat):
        for path in paths:
            await call(app, path, headers)
            n += 1
    prof.disable()
    elapsed = time.perf_counter() - started
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    head = f"{n} requests, {elapsed / n * 1e6:.0f} us each under the profiler\n"
    # the same again without the profiler: the figure to compare
    started = time.perf_counter()
    for _ in range(repeat):
        for path in paths:
            await call(app, path, headers)
    head += f"{(time.perf_counter() - started) / n * 1e6:.0f} us each without it\n"
    return head + out.getvalue()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile_api", description=__doc__)
    p.add_argument("--paths", type=Path, required=True, help="file of paths, one per line")
    p.add_argument("--key", required=True, help="the X-API-Key to send")
    p.add_argument("--header", action="append", default=[], help="another 'Name: value'")
    p.add_argument("--limit", type=int, default=50, help="paths of the file used")
    p.add_argument("--repeat", type=int, default=20, help="profiled passes over the paths")
    p.add_argument("--top", type=int, default=30, help="functions listed")
    ns = p.parse_args(argv)
    if not ns.paths.is_file():
        p.error(f"no such file: {ns.paths}")
    paths = [x for x in ns.paths.read_text().split() if x][: ns.limit]
    if not paths:
        p.error(f"{ns.paths} holds no paths")
    from api.main import create_app

    headers = [(b"x-api-key", ns.key.encode()), (b"accept-encoding", b"gzip")]
    for h in ns.header:
        name, _, value = h.partition(":")
        headers.append((name.strip().lower().encode(), value.strip().encode()))
    app = create_app()

    async def run() -> str:
        async with app.router.lifespan_context(app):
            return await measure(app, paths, headers, ns.repeat, ns.top)

    print(asyncio.run(run()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
