"""An open-loop HTTP load generator: ``python -m benchmarks.loadgen``, run as its own process.

Request i is due at ``start + i / rate`` whether or not earlier ones have answered (open loop),
and its latency is measured from that due time, so a server that falls behind is charged for
the queue it builds (no coordinated omission). Keep-alive HTTP/1.1 connections are reused and
more are opened when all are busy, up to ``--connections``. Paths are read from a file, one per
line, and taken in turn. Prints one JSON object: counts, achieved rate, latency percentiles.

The generator shares the machine's cores with the server, so it keeps its own cost low: it
runs on uvloop (as the server does) and parses no more of an answer than it must. What it
adds is charged to the server, so a cheaper generator only removes noise, never hides a delay.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np


class Client:
    """A pool of keep-alive connections to one host."""

    def __init__(self, host: str, port: int, headers: dict[str, str], limit: int) -> None:
        self.host, self.port, self.limit = host, port, limit
        self.extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.open = 0
        self.freed = asyncio.Condition()

    async def _take(
        self, *, fresh: bool = False
    ) -> tuple[tuple[asyncio.StreamReader, asyncio.StreamWriter], bool]:
        """A connection, and whether it was kept alive from an earlier request."""
        async with self.freed:
            while True:
                if self.idle and not fresh:
                    return self.idle.pop(), True
                if self.open < self.limit:
                    self.open += 1
                    break
                if self.idle:  # a fresh one is needed and none may be added: retire an idle one
                    self.idle.pop()[1].close()
                    self.open -= 1
                    continue
                await self.freed.wait()
        try:
            return await asyncio.open_connection(self.host, self.port), False
        except OSError:
            async with self.freed:
                self.open -= 1
                self.freed.notify()
            raise

    async def _give(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None) -> None:
        async with self.freed:
            if conn is None:
                self.open -= 1
            else:
                self.idle.append(conn)
            self.freed.notify()

    async def get(self, path: str) -> tuple[int, int]:
        """(status, body bytes) of ``GET path``.

        A kept-alive connection the server closed while idle fails at once; like any HTTP
        client, the request is then sent again once on a new connection.
        """
        for attempt in (0, 1):
            conn, reused = await self._take(fresh=attempt > 0)
            try:
                return await self._exchange(conn, path)
            except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
                if not reused or attempt:
                    raise
        raise AssertionError("unreachable")

    async def _exchange(
        self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], path: str
    ) -> tuple[int, int]:
        reader, writer = conn
        try:
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n{self.extra}\r\n".encode("latin-1")
            )
            status_line = await reader.readline()
            status = int(status_line.split()[1])
            length, chunked, close = 0, False, False
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value)
                elif name == "transfer-encoding" and "chunked" in value:
                    chunked = True
                elif name == "connection" and "close" in value.lower():
                    close = True
            size = 0
            if chunked:
                while (n := int((await reader.readline()).split(b";")[0], 16)) > 0:
                    size += len(await reader.readexactly(n + 2)) - 2
                await reader.readline()
            elif length:
                size = len(await reader.readexactly(length))
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
            writer.close()
            await self._give(None)
            raise
        if close:
            writer.close()
            await self._give(None)
        else:
            await self._give(conn)
        return status, size


async def run(
    url: str,
    paths: list[str],
    rate: float,
    duration: float,
    headers: dict[str, str],
    conns: int,
    grace: float = 30.0,
) -> dict[str, object]:
    """Send ``rate * duration`` requests on schedule; the summary.

    Requests still unanswered ``grace`` seconds after the last was sent are cancelled and
    counted as timed out (their latency is at least that long), so an overwhelmed server
    cannot stretch a run without bound.
    """
    parts = urlsplit(url)
    client = Client(parts.hostname or "127.0.0.1", parts.port or 80, headers, conns)
    n = int(rate * duration)
    latencies = np.full(n, np.nan)
    statuses: dict[str, int] = {}
    errors = 0

    async def one(i: int, due: float) -> None:
        nonlocal errors
        try:
            status, _ = await client.get(paths[i % len(paths)])
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
            errors += 1
            return
        latencies[i] = time.perf_counter() - due
        statuses[str(status)] = statuses.get(str(status), 0) + 1

    start = time.perf_counter() + 0.2
    tasks = []
    for i in range(n):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, due)))
    _, pending = await asyncio.wait(tasks, timeout=grace)
    for task in pending:  # a server that fell this far behind: these count as timed out
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    elapsed = time.perf_counter() - start
    done = latencies[~np.isnan(latencies)] * 1000

    def pct(q: float) -> float:
        return float(np.percentile(done, q)) if len(done) else float("nan")

    return {
        "requests": n,
        "rate": rate,
        "achieved": round(len(done) / elapsed, 1),
        "statuses": statuses,
        "errors": errors,
        "timed_out": len(pending),
        "p50_ms": round(pct(50), 2),
        "p90_ms": round(pct(90), 2),
        "p99_ms": round(pct(99), 2),
        "max_ms": round(float(done.max()) if len(done) else float("nan"), 2),
        "connections": client.open,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.loadgen", description=__doc__)
    p.add_argument("--url", required=True, help="http://host:port")
    p.add_argument("--paths", type=Path, required=True, help="file of paths, one per line")
    p.add_argument("--rate", type=float, required=True, help="requests per second")
    p.add_argument("--duration", type=float, default=60.0, help="seconds")
    p.add_argument("--header", action="append", default=[], help="Name: value")
    p.add_argument("--connections", type=int, default=256)
    p.add_argument("--grace", type=float, default=30.0, help="wait after the last request, s")
    ns = p.parse_args(argv)
    paths = [x for x in ns.paths.read_text().splitlines() if x]
    if not paths or ns.rate <= 0 or ns.duration <= 0:
        p.error("need paths, a positive rate and a positive duration")
    headers = dict(h.split(":", 1) for h in ns.header)
    headers = {k.strip(): v.strip() for k, v in headers.items()}
    import uvloop

    summary = uvloop.run(
        run(ns.url, paths, ns.rate, ns.duration, headers, ns.connections, ns.grace)
    )
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
